"""Serving in a rehearsal: each rendered InferenceService, served as KServe would serve it.

Its version is resolved in the stand-in registry (the cluster target's own pinning, so the alias never becomes a
path), the version's folder is fetched from the stand-in artifact store into what would be ``/mnt/models`` (one
folder per variant where the runtime routes between variants, as ``storageUris`` would download them), and
the rendered ServingRuntime's container runs in the serving image (by digest), on the host network, with the
InferenceService's environment and the runtime's command. The step passes when the server is ready and answers
one inference of a row of zeros (with the Deployment's API key when its runtime checks keys).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.targets.rehearsal.containers import Outcome, PodRun, container_user, container_variables, share

READY_TIMEOUT = 120.0
MODEL_DIR = "/mnt/models"


@dataclass(frozen=True)
class ServeRun:
    """One InferenceService (pinned to its version) and the ServingRuntime that serves it."""

    name: str
    isvc: dict[str, Any]
    runtime: dict[str, Any]
    pod: PodRun  # the Secrets, extra variables and read-only mounts the cluster would give the pod


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _arguments(args: list[str], name: str, ports: tuple[int, int]) -> list[str]:
    """The runtime's args with KServe's ``{{.Name}}`` filled in and the ports moved off the host's 8080/8081."""
    moved = {"--http-port=": f"--http-port={ports[0]}", "--grpc-port=": f"--grpc-port={ports[1]}"}
    replaced = []
    for arg in args:
        filled = arg.replace("{{.Name}}", name)
        replaced.append(next((new for prefix, new in moved.items() if filled.startswith(prefix)), filled))
    return replaced


def _smoke(url: str, name: str, features: int, headers: dict[str, str]) -> tuple[bool, str]:
    body = {"inputs": [{"name": "input", "shape": [1, features], "datatype": "FP32", "data": [[0.0] * features]}]}
    request = urllib.request.Request(
        f"{url}/v2/models/{name}/infer", json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            answer = json.loads(reply.read())
    except (OSError, ValueError) as exc:
        detail = exc.read().decode("utf-8", "replace")[:300] if isinstance(exc, urllib.error.HTTPError) else ""
        return False, f"inference failed: {exc} {detail}".strip()
    summary = {"model_version": answer.get("model_version"), "outputs": answer.get("outputs")}
    return True, json.dumps(summary, sort_keys=True)


def serve_once(run: ServeRun, model_dir: Path, workdir: Path, image: str) -> Outcome:
    """Start the runtime container on ``model_dir``, wait until ready, ask one inference, stop it."""
    from mlspec.serving import client
    from mlspec.targets.cluster.model_pins import served_folders

    (container,) = run.runtime["spec"]["containers"]
    model = run.isvc["spec"]["predictor"]["model"]
    merged = {"env": [*container.get("env", []), *model.get("env", [])]}
    variables = container_variables(merged, run.pod)
    settings = json.loads(variables.get("MLSPEC_SERVING", "{}"))
    headers: dict[str, str] = {}
    auth = settings.get("auth") or {}
    if auth.get("method") == "api_key":  # the Secret's stand-in: a fresh key the smoke inference sends
        key = variables.get(auth["api_key_env"]) or secrets.token_urlsafe(24)
        variables[auth["api_key_env"]] = key
        headers["X-API-Key"] = key.split()[0]
    scratch = workdir / "serving" / run.name
    scratch.mkdir(parents=True, exist_ok=True)
    env_file = scratch / "env"
    atomic_write(env_file, "".join(f"{k}={v}\n" for k, v in variables.items()).encode(), mode=0o600)
    share(model_dir)
    ports = (_free_port(), _free_port())
    container_name = f"mlspec-rehearsal-{run.name}-{ports[0]}"
    args = ["docker", "run", "--detach", "--name", container_name, "--network", "host", "--user", container_user(),
            "--env-file", str(env_file), "--read-only", "--tmpfs", "/tmp",
            "--mount", f"type=bind,source={model_dir},target={MODEL_DIR},readonly"]  # fmt: skip
    for host, target in run.pod.mounts:
        args += ["--mount", f"type=bind,source={host},target={target},readonly"]
    args += [image, *container.get("command", []), *_arguments(container.get("args", []), run.name, ports)]
    log = workdir / "logs" / f"serve-{run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    ok, output = False, ""
    try:
        subprocess.run(args, capture_output=True, check=True, timeout=120)
        url = f"http://127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not client.is_ready(url, timeout=1.0):
            if _exited(container_name):
                break
            time.sleep(0.2)
        if client.is_ready(url, timeout=2.0):
            first = model_dir / served_folders(run.isvc)[0][0]  # every variant takes the same features
            features = len(json.loads((first / "manifest.json").read_text())["features"])
            ok, output = _smoke(url, run.name, features, headers)
    except subprocess.SubprocessError as exc:
        output = f"the runtime container did not start: {exc}"
    finally:
        logs = subprocess.run(["docker", "logs", container_name], capture_output=True, check=False, timeout=60)
        log.write_bytes(logs.stdout + logs.stderr + (f"\nrehearsal: {output}\n".encode() if not ok else b""))
        subprocess.run(["docker", "rm", "--force", container_name], capture_output=True, check=False, timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    return Outcome(ok, time.monotonic() - started, log, output if ok else "")


def _exited(container: str) -> bool:
    done = subprocess.run(["docker", "inspect", "--format", "{{.State.Running}}", container], capture_output=True,
                          text=True, check=False, timeout=30)  # fmt: skip
    return done.stdout.strip() == "false"
