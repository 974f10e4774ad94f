"""Run a command with real PostgreSQL, Redis, Prometheus and object-store servers and a Docker engine on loopback,
started for it and stopped after.

`make test` runs the suite through this:

    python scripts/test_services.py -- python -m pytest ...

It installs the servers from Debian's packages when they are missing (as root, with
apt-get), starts each in a temporary folder on a free port, exports
``MLSPEC_TEST_POSTGRES_URL`` and ``MLSPEC_TEST_REDIS_URL``, runs the command, then
stops both and removes their folders. Azurite and an S3 server (moto) are started the
same way by ``storage_services.py`` (``MLSPEC_TEST_AZURITE_*``, ``MLSPEC_TEST_S3_URL``),
and a Docker engine with a debootstrapped base image and a loopback registry by
``docker_service.py`` (``MLSPEC_TEST_DOCKER``). Prometheus (Debian's ``prometheus``) scrapes, every
second, the targets tests list in file_sd JSON files under ``MLSPEC_TEST_PROMETHEUS_TARGETS``; its address
is ``MLSPEC_TEST_PROMETHEUS``. A server that cannot start is reported with the reason
(``MLSPEC_TEST_SERVICES_SKIPPED``) and the tests that need it skip saying so (the object-store and
Prometheus tests fail under CI instead); everything else still runs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import storage_services  # Azurite and an S3 server (scripts/storage_services.py)
from docker_service import docker_engine  # a sibling script, not a package

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _say(text: str) -> None:
    print(f"[test services] {text}", flush=True)


def _apt_install(*packages: str) -> str | None:
    """Install Debian packages when we are root and apt-get exists; returns why not otherwise."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    _say(f"installing {' '.join(packages)} from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],):
        done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:  # the package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            return f"apt-get install failed: {done.stderr.strip().splitlines()[-1:]}"
    return None


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_postgres_user(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the 'postgres' user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server for the run; yields its URL (user mlspec, trust auth on loopback)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        why = _apt_install("postgresql")
        bin_dir = _postgres_bin()
        if bin_dir is None:
            raise RuntimeError(f"PostgreSQL is not installed ({why})")
    folder = Path(tempfile.mkdtemp(prefix="mlspec-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()
    run = lambda args: subprocess.run(_as_postgres_user(args), capture_output=True, text=True, check=False)  # noqa: E731
    init = run([str(bin_dir / "initdb"), "-D", str(data), "-U", "mlspec", "--auth=trust", "-E", "UTF8", "--no-sync"])
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-300:]}")
    options = f"-p {port} -k {folder} -c listen_addresses={HOST} -c fsync=off -c max_connections=200"
    start = run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"])
    if start.returncode != 0:
        log = (folder / "log").read_text(errors="replace")[-500:] if (folder / "log").exists() else start.stderr
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {log.strip()}")
    try:
        yield f"postgresql://mlspec@{HOST}:{port}/postgres"
    finally:
        run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A Redis server for the run (no persistence); yields its URL."""
    server = shutil.which("redis-server")
    if server is None:
        why = _apt_install("redis-server")
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError(f"Redis is not installed ({why})")
    folder = Path(tempfile.mkdtemp(prefix="mlspec-redis-"))
    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((HOST, port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Redis did not start")
            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


PROMETHEUS_CONFIG = {
    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
    "scrape_configs": [
        {
            "job_name": "mlspec-tests",
            # every JSON file tests write into targets/ (each a list of {"targets": [...], "labels": {...}})
            "file_sd_configs": [{"files": ["targets/*.json"], "refresh_interval": "1s"}],
        }
    ],
}


@contextlib.contextmanager
def prometheus() -> Iterator[tuple[str, str]]:
    """A Prometheus server scraping, every second, the targets listed in ``<folder>/targets/*.json``; yields its
    URL and that folder (tests add a file of their own and remove it after)."""
    server = shutil.which("prometheus")
    if server is None:
        why = _apt_install("prometheus")
        server = shutil.which("prometheus")
        if server is None:
            raise RuntimeError(f"Prometheus is not installed ({why})")
    folder = Path(tempfile.mkdtemp(prefix="mlspec-prometheus-"))
    (folder / "targets").mkdir()
    config = folder / "prometheus.yml"
    config.write_text(json.dumps(PROMETHEUS_CONFIG, indent=2), encoding="utf-8")  # JSON is YAML
    port = _free_port()
    url = f"http://{HOST}:{port}"
    with open(folder / "log", "wb") as log:
        process = subprocess.Popen(
            [server, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={HOST}:{port}", "--web.enable-lifecycle", "--storage.tsdb.retention.time=1h"],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{url}/-/ready"):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"Prometheus did not start (exit code {process.poll()}): {tail.strip()}")
            time.sleep(0.1)
        yield url, str(folder / "targets")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return int(reply.status) == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Start the servers, run the command after ``--``, stop the servers; returns the command's exit code."""
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python scripts/test_services.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    env = dict(os.environ)
    skipped: list[str] = []
    with contextlib.ExitStack() as stack:
        for name, variable, service in (
            ("postgres", "MLSPEC_TEST_POSTGRES_URL", postgres),
            ("redis", "MLSPEC_TEST_REDIS_URL", redis),
            ("docker", "MLSPEC_TEST_DOCKER", lambda: docker_engine(_apt_install)),
        ):
            try:
                env[variable] = stack.enter_context(service())
                _say(f"{name} running at {env[variable]}")
            except RuntimeError as exc:
                skipped.append(f"{name}: {exc}")
                _say(f"{name} NOT running, tests that need it will skip: {exc}")
        try:  # Prometheus: its URL and the folder of file_sd target files
            url, targets = stack.enter_context(prometheus())
            env.update({"MLSPEC_TEST_PROMETHEUS": url, "MLSPEC_TEST_PROMETHEUS_TARGETS": targets})
            _say(f"prometheus running at {url}")
        except RuntimeError as exc:
            skipped.append(f"prometheus: {exc}")
            _say(f"prometheus NOT running, tests that need it will skip: {exc}")
        for name, store in (("azurite", storage_services.azurite), ("s3", storage_services.s3_server)):
            try:  # object stores: several variables each (endpoint, account, key, CA)
                env.update(stack.enter_context(store(_apt_install)))
                _say(f"{name} running")
            except RuntimeError as exc:
                skipped.append(f"{name}: {exc}")
                _say(f"{name} NOT running, tests that need it will skip: {exc}")
        if skipped:
            env["MLSPEC_TEST_SERVICES_SKIPPED"] = "; ".join(skipped)
        code = subprocess.run(command, env=env, check=False).returncode
    _say("servers stopped")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
