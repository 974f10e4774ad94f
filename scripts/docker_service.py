"""A Docker engine, a Debian base image and an image registry on loopback, for the container tests.

Used by ``scripts/test_services.py``. The engine is Debian's ``docker.io``, started (when none is running)
as ``dockerd --bridge=none --iptables=false --ip-masq=false``: containers run with ``--network host`` or
``none`` only. No image registry on the internet is reachable here, so the base image is built with
``debootstrap --variant=minbase bookworm`` (python3 and venv included) and ``docker import``-ed; its
tarball is cached in ``.cache/images/`` by month and architecture, so a rerun imports (or finds) it in
seconds. The registry (Debian's ``docker-registry``) listens on 127.0.0.1 and keeps its blobs in
``.cache/images/registry``, so pushing an unchanged image again uploads nothing.

Yields ``MLSPEC_TEST_DOCKER``'s value: JSON with ``base_image`` and ``registry``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HOST = "127.0.0.1"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "images"
REGISTRY_PORT = 5055
DOCKERD_FLAGS = ["--bridge=none", "--iptables=false", "--ip-masq=false"]


def _engine_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.2)


def _base_image() -> str:
    """The debootstrapped Debian base (python3, venv), imported once per month and architecture."""
    key = f"bookworm-{dt.date.today():%Y%m}-{platform.machine()}"
    name = f"mlspec-base:{key}"
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0:
        return name
    tarball = CACHE / f"base-{key}.tar"
    if not tarball.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mlspec-rootfs-") as rootfs:
            boot = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                 "bookworm", rootfs],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if boot.returncode != 0:
                raise RuntimeError(f"debootstrap failed: {boot.stderr.strip()[-300:]}")
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (Path(rootfs) / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", rootfs, "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    with tarball.open("rb") as stream:
        subprocess.run(["docker", "import", "-", name], stdin=stream, capture_output=True, check=True)
    return name


@contextlib.contextmanager
def _registry() -> Iterator[str]:
    """A registry on loopback, its storage cached across runs.

    The port is fixed when free: docker knows which blobs a registry (by host and port) already holds, so a rerun
    pushes an unchanged image without uploading it again.
    """
    port = REGISTRY_PORT if not _port_open(REGISTRY_PORT) else _free_port()
    storage = CACHE / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlspec-registry-") as folder:
        config = Path(folder) / "config.yml"
        settings = {
            "version": 0.1,
            "log": {"level": "error"},
            "http": {"addr": f"{HOST}:{port}"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}},
        }
        config.write_text(json.dumps(settings))  # JSON is YAML
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait(lambda: _port_open(port), process, "the image registry")
            yield f"{HOST}:{port}/mlspec"
        finally:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


@contextlib.contextmanager
def docker_engine(install: Callable[..., str | None] | None = None) -> Iterator[str]:
    """The engine (started here unless one runs), the base image and a registry; yields their JSON.

    ``install(*packages)`` installs missing Debian packages (returning why not, or None).
    """
    packages = ("docker.io", "debootstrap", "docker-registry")
    if not all(shutil.which(tool) for tool in ("dockerd", "debootstrap", "docker-registry")):
        why = install(*packages) if install else "run scripts/test_services.py once, or apt-get install them"
        if not all(shutil.which(tool) for tool in ("dockerd", "debootstrap", "docker-registry")):
            raise RuntimeError(f"{', '.join(packages)} are not installed ({why})")
    started: subprocess.Popen[bytes] | None = None
    log = Path(tempfile.mkstemp(prefix="mlspec-dockerd-", suffix=".log")[1])
    try:
        if not _engine_up():
            if os.geteuid() != 0:
                raise RuntimeError("no docker engine runs and starting one needs root")
            with log.open("wb") as out:
                started = subprocess.Popen(["dockerd", *DOCKERD_FLAGS], stdout=out, stderr=subprocess.STDOUT)
            try:
                _wait(_engine_up, started, "dockerd")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: {log.read_text(errors='replace').strip()[-300:]}") from None
        try:
            base = _base_image()
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(f"the base image could not be built: {exc}") from None
        with _registry() as registry:
            yield json.dumps({"base_image": base, "registry": registry})
    finally:
        if started is not None:  # only an engine this run started is stopped
            started.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                started.wait(timeout=30)
        log.unlink(missing_ok=True)
