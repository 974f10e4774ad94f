"""Run what a cluster runs, in local containers: a rendered Job's pod with the docker CLI, a compiled Kubeflow
pipeline with kfp's DockerRunner. Both on the host network (every stand-in is on loopback), as a non-root user."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.targets.rehearsal.standins import RehearsalError

REHEARSAL_USER = 65532  # the user rendered Jobs run as; pipeline steps run as it too when mlspec runs as root


@dataclass(frozen=True)
class Outcome:
    """How one container run (or pipeline run) ended."""

    ok: bool
    seconds: float
    log: Path
    output: str = ""  # a pipeline's output (its summary JSON); empty for a Job


def container_user() -> str:
    """Who containers run as: this user (so the files they write stay yours), or the Jobs' user under root."""
    uid = os.getuid()
    return f"{uid}:{os.getgid()}" if uid != 0 else f"{REHEARSAL_USER}:{REHEARSAL_USER}"


def share(folder: Path) -> None:
    """Let the rehearsal's containers write ``folder`` (under root they run as another user)."""
    if os.getuid() == 0:
        for path in (folder, *folder.rglob("*")):
            os.chown(path, REHEARSAL_USER, REHEARSAL_USER, follow_symlinks=False)


def docker_available() -> None:
    """RehearsalError unless a Docker engine answers."""
    if shutil.which("docker") is None:
        raise RehearsalError(
            "the rehearsal runs containers, and no docker command is installed",
            hint="install Docker (Debian: apt-get install docker.io) and start its engine",
        )
    done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                          check=False, timeout=60)  # fmt: skip
    if done.returncode != 0:
        raise RehearsalError(f"no Docker engine answers: {done.stderr.strip()[:300]}", hint="start dockerd")


def ensure_image(reference: str) -> None:
    """Pull ``reference`` (by digest) unless the local engine has it, as a cluster node would; RehearsalError
    when neither works."""
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", reference], capture_output=True,
                          text=True, check=False, timeout=60)  # fmt: skip
    if done.returncode == 0:
        return
    pulled = subprocess.run(["docker", "pull", "--quiet", reference], capture_output=True, text=True, check=False,
                            timeout=1800)  # fmt: skip
    if pulled.returncode != 0:
        raise RehearsalError(
            f"the environment's runtime image {reference} is not in this machine's Docker and cannot be pulled: "
            f"{pulled.stderr.strip()[:300]}",
            hint="log in to its registry (docker login), or build it here: mlspec image build --push <registry>",
        )


@dataclass(frozen=True)
class PodRun:
    """A rendered Job's pod and what the cluster would give it: its Secrets' keys and its ConfigMaps' files."""

    name: str
    pod: dict[str, Any]
    secrets: Mapping[str, Mapping[str, str]]  # Secret name -> key -> value
    config_maps: Mapping[str, Mapping[str, str]]  # ConfigMap name -> file -> content
    extra_env: Mapping[str, str]
    mounts: tuple[tuple[Path, str], ...] = ()  # (host path, container path), read-only


def container_variables(container: dict[str, Any], run: PodRun) -> dict[str, str]:
    """The variables a container gets: the run's extra ones, its envFrom Secrets (prefixed) and its env items."""
    found = dict(run.extra_env)
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        if name not in run.secrets:
            raise RehearsalError(f"Job {run.name} reads Secret {name}, which the rehearsal has no stand-in for")
        found |= {f"{source.get('prefix', '')}{key}": value for key, value in run.secrets[name].items()}
    for item in container.get("env", []):
        if "value" in item:
            found[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            found[item["name"]] = run.secrets.get(ref["name"], {}).get(ref["key"], "")
    return found


def _volumes(pod: dict[str, Any], container: dict[str, Any], run: PodRun, scratch: Path) -> list[str]:
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    args: list[str] = []
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        folder = scratch / mount["name"]
        if "configMap" in volume:
            files = run.config_maps.get(volume["configMap"]["name"])
            if files is None:
                raise RehearsalError(f"Job {run.name} mounts ConfigMap {volume['configMap']['name']}, not rendered")
            folder.mkdir(parents=True, exist_ok=True)
            for file, content in files.items():
                (folder / file).write_text(content, encoding="utf-8")
        else:  # emptyDir, and the projected KFP token (no KFP API here): an empty folder
            folder.mkdir(parents=True, exist_ok=True)
        source = folder / mount["subPath"] if "subPath" in mount else folder
        read_only = ",readonly" if mount.get("readOnly") else ""
        args += ["--mount", f"type=bind,source={source},target={mount['mountPath']}{read_only}"]
    return args


def run_pod(run: PodRun, workdir: Path, timeout: float) -> Outcome:
    """Run the pod's one container as the cluster would (command, variables, mounts, read-only root)."""
    pod = run.pod
    (container,) = pod["spec"]["containers"]
    scratch = workdir / "pods" / run.name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env_file = scratch / "env"
    variables = container_variables(container, run)
    atomic_write(env_file, "".join(f"{k}={v}\n" for k, v in variables.items()).encode(), mode=0o600)
    args = ["docker", "run", "--rm", "--network", "host", "--user", container_user(), "--env-file", str(env_file),
            "--mount", f"type=bind,source={workdir},target={workdir}"]  # fmt: skip
    args += _volumes(pod, container, run, scratch)
    for host, target in run.mounts:
        args += ["--mount", f"type=bind,source={host},target={target},readonly"]
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        args.append("--read-only")
    share(scratch)
    args += [container["image"], *container["command"], *container.get("args", [])]
    log = workdir / "logs" / f"{run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=timeout)
            ok = done.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
    return Outcome(ok, time.monotonic() - started, log)


def run_pipeline(
    name: str,
    compiled: Path,
    *,
    parameters: Mapping[str, Any],
    workdir: Path,
    environment: Mapping[str, str],
    mounts: tuple[tuple[Path, str], ...],
) -> Outcome:
    """Run a compiled pipeline with kfp's DockerRunner: each step in the image its spec names, the rehearsal
    folder mounted at the same path (the pipeline root is in it), ``mounts`` read-only. Its output and log are
    the Outcome's."""
    import docker.types  # type: ignore[import-not-found]
    from kfp import components, local

    log = workdir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    runner = local.DockerRunner(
        network_mode="host", user=container_user(), environment=dict(environment),
        mounts=[  # the rehearsal folder (its SQLite stand-ins) where the host has it, the rest read-only
            docker.types.Mount(str(workdir), str(workdir), type="bind"),
            *(docker.types.Mount(target, str(host), type="bind", read_only=True) for host, target in mounts),
        ],
    )  # fmt: skip
    root = workdir / "pipelines" / name
    root.mkdir(parents=True, exist_ok=True)
    share(root)
    started = time.monotonic()
    output, ok = "", False
    with open(log, "w", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
        try:
            task = components.load_component_from_file(str(compiled))(**parameters)
            output, ok = str(task.output), True
        except Exception as exc:  # the step's own log above says why; the rehearsal reports the failure
            out.write(f"rehearsal: {name} failed: {exc}\n")
    return Outcome(ok, time.monotonic() - started, log, output)
