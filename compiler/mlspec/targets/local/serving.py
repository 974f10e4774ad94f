"""Serving engine: one onnxruntime model server process per Deployment, configured from the spec and the registry.

The server (``mlspec.serving``) speaks the Open Inference Protocol v2 and runs the
rollout itself (canary steps, A/B split, shadow, blue-green). This side decides
which registered versions it serves, verifies their sha256 before the server may
load them, starts, reloads (SIGHUP) and stops it, and turns a finished rollout
into registry aliases: promoted means the canary becomes champion, rolled back
means the challenger is tagged rejected.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.crypto.keys import ROOT_VARIABLE, KeyResolver
from mlspec.spec.deployment import AbRollout, Deployment, OnlineDeploymentSpec, ShadowRollout
from mlspec.targets.base import TargetError
from mlspec.targets.local.endpoint_auth import server_auth, server_credentials
from mlspec.targets.local.endpoint_tls import server_tls
from mlspec.targets.local.paths import LocalPaths
from mlspec.targets.local.registry import REJECTED_TAG, ModelVersion, Registry

FIRST_PORT = 8601
HOST = "127.0.0.1"
GATED = ("canary", "blue_green")  # strategies whose rollout decides promotion
DEVICE_KEYS = ("device", "requested_device", "providers", "fallback", "fallback_reason")


def device_summary(variant: dict[str, Any]) -> str:
    """One phrase for where a variant runs, e.g. ``cpu (gpu requested, fell back: <reason>)`` or
    ``gpu (CUDAExecutionProvider)``; ``-`` before the server reported it."""
    device = variant.get("device")
    if not device:
        return "-"
    if variant.get("fallback"):
        requested = variant.get("requested_device") or "gpu"
        return f"{device} ({requested} requested, fell back: {variant.get('fallback_reason') or 'no reason given'})"
    gpu = [p for p in variant.get("providers") or () if p != "CPUExecutionProvider"]
    return f"{device} ({', '.join(gpu)})" if gpu else str(device)


@dataclass(frozen=True)
class ServerStatus:
    """What `mlspec status` shows for one Deployment. Each variant dict holds the config's name, alias, version,
    path and sha256 and, once the server reported them, its device, requested_device, providers (onnxruntime's,
    in use), fallback (true when a GPU was asked for and it runs on CPU) and fallback_reason."""

    deployment: str
    endpoint: str
    running: bool
    ready: bool
    pid: int | None
    variants: tuple[dict[str, Any], ...]
    rollout: dict[str, Any]
    held_back: str = ""  # why a registered challenger is not rolled out (worse than the champion offline)
    ca_file: str | None = None  # the CA to trust when calling the endpoint (https), None for plain HTTP
    grpc: str = ""  # host:port of the Open Inference Protocol over gRPC

    def device(self, variant: dict[str, Any]) -> str:
        """Where ``variant`` runs, as one phrase (see device_summary)."""
        return device_summary(variant)


class ServingEngine:
    """Starts, reloads and stops the local model servers of one environment."""

    def __init__(self, paths: LocalPaths, registry: Registry) -> None:
        self.paths = paths
        self.registry = registry

    def folder(self, deployment: str) -> Path:
        """The Deployment's config, pid, logs, request log and rollout status."""
        return self.paths.serving / deployment

    def request_log(self, deployment: str) -> Path:
        """Where the server appends its sampled requests (the monitoring config's ``current.request_log``)."""
        return self.paths.data_dir / "requests" / deployment / "requests.jsonl"

    def config_path(self, deployment: str) -> Path:
        """The server's config file."""
        return self.folder(deployment) / "config.json"

    def read_config(self, deployment: str) -> dict[str, Any] | None:
        """The config the server runs with, or None."""
        try:
            data: dict[str, Any] = json.loads(self.config_path(deployment).read_text())
            return data
        except (OSError, ValueError):
            return None

    def endpoint(self, deployment: str) -> str | None:
        """The server's base URL (https when it serves TLS)."""
        config = self.read_config(deployment)
        return _base_url(config) if config else None

    def ca_file(self, deployment: str) -> str | None:
        """The CA a client trusts to call the server over TLS (None: plain HTTP)."""
        return _ca_of(self.read_config(deployment) or {})

    # -- which versions serve -------------------------------------------------------------------------

    def variants(self, deployment: Deployment, expected: dict[str, str]) -> list[dict[str, Any]]:
        """The registered versions the Deployment serves now, each verified; ``expected``: version -> sha256."""
        spec = _online(deployment)
        name = spec.model.name
        rollout = spec.rollout
        keys = KeyResolver(self.paths.project_root)  # encrypted versions: their file:// keys are the project's

        def entry(role: str, model: ModelVersion, alias: str | None) -> dict[str, Any]:
            sha256 = self.registry.verify(model, expected.get(model.version), keys)
            return {"name": role, "alias": alias, "version": model.version, "path": model.onnx_path, "sha256": sha256}

        if isinstance(rollout, AbRollout):
            arms = []
            for variant in rollout.variants:
                model = self._require(name, alias=variant.alias)
                arms.append(entry(variant.alias, model, variant.alias))
            return arms
        stable = (
            self._require(name, version=spec.model.version)
            if spec.model.version
            else self._require(name, alias=spec.model.alias)
        )
        chosen = [entry("stable", stable, spec.model.alias if not spec.model.version else None)]
        second_alias = rollout.challenger if isinstance(rollout, ShadowRollout) else "challenger"
        if rollout.strategy == "direct" or spec.model.version:
            return chosen
        second = self.registry.version(name, alias=second_alias)
        gated_out = rollout.strategy in GATED and second is not None and (second.rejected or second.worse)
        if second and second.version != stable.version and not gated_out:
            role = {"canary": "canary", "blue_green": "green", "shadow": "shadow"}[rollout.strategy]
            chosen.append(entry(role, second, second_alias))
        return chosen

    def held_back(self, deployment: Deployment) -> str:
        """Why the Deployment's challenger is not rolled out although one is registered: worse than the champion
        offline (a canary or blue-green never promotes it); "" when none is held back."""
        spec = _online(deployment)
        if spec.rollout.strategy not in GATED or spec.model.version:
            return ""
        stable = self.registry.version(spec.model.name, alias=spec.model.alias)
        second = self.registry.version(spec.model.name, alias="challenger")
        if second is None or not second.worse or (stable is not None and stable.version == second.version):
            return ""
        return f"{spec.model.name} v{second.version} is not rolled out: {second.worse}"

    def _require(self, name: str, *, alias: str | None = None, version: int | None = None) -> ModelVersion:
        found = self.registry.version(name, alias=alias, version=version)
        if found is None:
            what = f"version {version}" if version else f"alias '{alias}'"
            raise TargetError(f"model '{name}' has no {what} in the registry; apply its TrainingPipeline first")
        return found

    # -- process lifecycle ----------------------------------------------------------------------------

    def deploy(
        self,
        deployment: Deployment,
        *,
        features: list[str],
        expected: dict[str, str],
        lookup: dict[str, Any] | None = None,
    ) -> dict[str, str]:
        """Serve the Deployment as the spec and registry say (``lookup``: where entity keys are looked up);
        returns target ids (endpoint, versions, pid)."""
        from mlspec.serving import process

        name = deployment.metadata.name
        spec = _online(deployment)
        variants = self.variants(deployment, expected)
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        previous = self.read_config(name)
        pid = self._pid(name)
        running = pid is not None and process.is_running(pid)
        port = previous["port"] if previous else None
        if port is None or (not running and not _bindable(port)):  # keep the URL callers know, unless it is taken
            port = self._free_port()
        grpc_port = previous.get("grpc_port") if previous else None
        if grpc_port is None or (not running and not _bindable(grpc_port)):
            grpc_port = self._free_port({port})
        drift = spec.monitoring.drift
        config = {
            "deployment": name,
            "model_name": spec.model.name,
            "host": HOST,
            "port": port,
            "grpc_port": grpc_port,  # the Open Inference Protocol over gRPC, beside REST
            "device": spec.runtime.device,
            "fallback": spec.runtime.fallback,
            "batching": spec.runtime.batching,
            "features": features or list(_features_of(variants, self.registry, spec.model.name)),
            "variants": variants,
            "rollout": spec.rollout.model_dump(mode="json"),
            "log": {
                "path": str(self.request_log(name)),
                "sample_rate": drift.sample_rate if drift else 0.0,
                "enabled": spec.monitoring.log_requests and drift is not None,
                # request features of real customers: sealed at rest with the environment's key
                **({"seal_key": self.paths.kms_key} if self.paths.kms_key else {}),
            },
            "status_path": str(folder / "rollout.json"),
            "auth": server_auth(self.paths, name, spec.auth),
            "tls": server_tls(self.paths) if spec.endpoint.tls else None,
            "lookup": lookup,  # entity keys in, features fetched from the online store
        }
        listeners = ("port", "grpc_port", "tls")
        if running and previous and any(previous.get(k) != config[k] for k in listeners):
            self.stop(name)  # a listener changes only with a restart (a reload keeps its sockets)
            running = False
        if config != previous:
            if previous and _versions(previous) != _versions(config):
                (folder / "rollout.json").unlink(missing_ok=True)  # a new rollout starts from its first step
            atomic_write(self.config_path(name), json.dumps(config, indent=2, sort_keys=True).encode())
            if running and pid is not None:
                os.kill(pid, signal.SIGHUP)
                self._wait_versions(name, config)
        if not running:
            try:
                with _project_root(self.paths.project_root):  # where the server finds file:// keys of encrypted models
                    pid = process.start(self.config_path(name), folder / "server.log")
            except Exception as exc:  # the server's own message: bad model, port taken, ...
                raise TargetError(f"model server for {name} did not start: {exc}") from None
            atomic_write(folder / "server.pid", str(pid).encode())
        held = self.held_back(deployment)
        return {
            **({"held_back": held} if held else {}),
            "endpoint": f"{_base_url(config)}/v2/models/{name}",
            "grpc": f"{HOST}:{grpc_port}",
            "versions": ",".join(f"{v['name']}={v['version']}" for v in variants),
            "sha256": ",".join(f"{v['version']}:{v['sha256'][:16]}" for v in variants),
            "pid": str(pid),
        }

    def _wait_versions(self, name: str, config: dict[str, Any]) -> None:
        from mlspec.serving import client

        url = _base_url(config)
        versions = [v["version"] for v in config["variants"]]
        headers = self.credentials(config)
        try:
            if config.get("auth") and not headers:  # an outside issuer's tokens: read what the server wrote
                self._wait_status_file(name, versions, url, _ca_of(config))
            else:
                client.wait_versions(url, name, versions, timeout=60, headers=headers, ca_file=_ca_of(config))
        except Exception as exc:
            log = self.folder(name) / "server.log"
            raise TargetError(f"model server for {name} did not reload to {versions}: {exc} (see {log})") from None

    def _wait_status_file(
        self, name: str, versions: list[str], url: str, ca: str | None, timeout: float = 60.0
    ) -> None:
        from mlspec.serving import client

        wanted = sorted(str(v) for v in versions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            served = sorted(str(v.get("version")) for v in (self.rollout(name).get("variants") or {}).values())
            if served == wanted and client.is_ready(url, ca_file=ca):
                return
            time.sleep(0.05)
        raise TimeoutError(f"model server at {url} does not serve versions {wanted} after {timeout:g} s")

    def credentials(self, config: dict[str, Any]) -> dict[str, str]:
        """What mlspec sends to read a server's metadata and rollout (see endpoint_auth.server_credentials)."""
        return server_credentials(self.paths, config.get("auth"))

    def stop(self, deployment: str) -> bool:
        """Stop the Deployment's server (flushing its request log); True when one was running."""
        from mlspec.serving import process

        pid = self._pid(deployment)
        if pid is None or not process.is_running(pid):
            return False
        process.stop(pid)
        (self.folder(deployment) / "server.pid").unlink(missing_ok=True)
        return True

    def _pid(self, deployment: str) -> int | None:
        """The running server's pid, by its command line (a pid file naming another process is not trusted)."""
        from mlspec.serving import process

        return process.server_pid(self.config_path(deployment), self.folder(deployment) / "server.pid")

    def healthy(self, deployment: str) -> bool:
        """The server runs and answers ready."""
        from mlspec.serving import client, process

        pid = self._pid(deployment)
        config = self.read_config(deployment)
        if pid is None or config is None or not process.is_running(pid):
            return False
        return client.is_ready(_base_url(config), timeout=2, ca_file=_ca_of(config))

    def _free_port(self, also_taken: set[int] | None = None) -> int:
        configs = [c for c in (self.read_config(p.name) for p in self._folders()) if c]
        taken = {c["port"] for c in configs} | {c["grpc_port"] for c in configs if c.get("grpc_port")}
        taken |= also_taken or set()
        port = FIRST_PORT
        while port in taken or not _bindable(port):
            port += 1
        return port

    def _folders(self) -> list[Path]:
        return [p for p in self.paths.serving.iterdir() if p.is_dir()] if self.paths.serving.is_dir() else []

    def deployments(self) -> list[str]:
        """Every Deployment with a server folder."""
        return sorted(p.name for p in self._folders() if (p / "config.json").is_file())

    # -- rollout outcome -> registry ------------------------------------------------------------------

    def rollout(self, deployment: str) -> dict[str, Any]:
        """The rollout status the server last wrote ({} before it wrote one)."""
        try:
            data: dict[str, Any] = json.loads((self.folder(deployment) / "rollout.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def settle(self, deployment: Deployment, *, features: list[str], expected: dict[str, str]) -> str | None:
        """Turn a finished rollout into registry aliases and serve the outcome; returns what happened, or None."""
        name = deployment.metadata.name
        config = self.read_config(name)
        status = self.rollout(name)
        spec = deployment.spec
        if not config or not isinstance(spec, OnlineDeploymentSpec) or spec.rollout.strategy not in GATED:
            return None
        second = next((v for v in config["variants"] if v["name"] in ("canary", "green")), None)
        if second is None:
            return None
        phase = status.get("phase")
        model = deployment.spec.model.name
        if phase in ("promoted", "switched"):
            self.registry.set_alias(model, deployment.spec.model.alias or "champion", second["version"])
            outcome = f"{model} v{second['version']} promoted to {deployment.spec.model.alias or 'champion'}"
        elif phase == "rolled_back":
            self.registry.tag(model, second["version"], REJECTED_TAG, "rolled_back")
            outcome = f"{model} v{second['version']} rolled back: {status.get('reason', 'thresholds breached')}"
        else:
            return None
        lookup = (self.read_config(deployment.metadata.name) or {}).get("lookup")  # the same online store
        self.deploy(deployment, features=features, expected=expected, lookup=lookup)
        return outcome

    def status(self, deployment: str) -> ServerStatus:
        """Endpoint, process, versions, traffic and health of one Deployment's server."""
        from mlspec.serving import client

        config = self.read_config(deployment) or {}
        url = self.endpoint(deployment) or ""
        pid = self._pid(deployment)
        ready = self.healthy(deployment)
        live: dict[str, Any] = {}
        if ready:
            try:
                live = client.rollout_status(url, deployment, headers=self.credentials(config), ca_file=_ca_of(config))
            except Exception:
                live = {}
        rollout = live or self.rollout(deployment)
        reported = rollout.get("variants") or {}
        variants = []
        for variant in config.get("variants", ()):
            seen = reported.get(variant.get("name")) or {}
            if str(seen.get("version")) != str(variant.get("version")):
                seen = {}  # a status from before the last reload speaks of other versions
            variants.append({**variant, **{k: seen[k] for k in DEVICE_KEYS if k in seen}})
        return ServerStatus(
            deployment=deployment,
            endpoint=f"{url}/v2/models/{deployment}" if url else "",
            running=pid is not None and ready,
            ready=ready,
            pid=pid,
            variants=tuple(variants),
            rollout=rollout,
            ca_file=_ca_of(config),
            grpc=f"{config['host']}:{config['grpc_port']}" if config.get("grpc_port") else "",
        )


@contextlib.contextmanager
def _project_root(root: Path) -> Iterator[None]:
    """$MLSPEC_PROJECT_ROOT set to ``root`` while a server starts: its environment is copied from ours, and the
    server resolves the relative ``file://`` key reference recorded in an encrypted model against it."""
    before = os.environ.get(ROOT_VARIABLE)
    os.environ[ROOT_VARIABLE] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ROOT_VARIABLE, None)
        else:
            os.environ[ROOT_VARIABLE] = before


def _ca_of(config: dict[str, Any]) -> str | None:
    return (config.get("tls") or {}).get("ca_file")


def _base_url(config: dict[str, Any]) -> str:
    scheme = "https" if config.get("tls") else "http"
    return f"{scheme}://{config['host']}:{config['port']}"


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _versions(config: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["name"], v["version"]) for v in config.get("variants", [])]


def _features_of(variants: list[dict[str, Any]], registry: Registry, model: str) -> tuple[str, ...]:
    found = registry.version(model, version=variants[0]["version"])
    return found.features if found else ()


def _online(deployment: Deployment) -> OnlineDeploymentSpec:
    """The spec of an online Deployment; batch and edge Deployments have no model server."""
    if not isinstance(deployment.spec, OnlineDeploymentSpec):
        name = deployment.metadata.name
        raise TargetError(f"{name} is a mode: {deployment.spec.mode} Deployment; only online ones are served")
    return deployment.spec
