"""``python -m mlspec.serving.kserve``: mlspec's model server as a KServe serving runtime.

KServe's storage initializer downloads the InferenceService's ``storageUri`` (one registered version's folder:
``model.onnx``, ``model.sha256``, ``manifest.json``) into ``--model-dir`` (``/mnt/models``) before this starts.
The Deployment's settings come from the InferenceService as environment variables, rendered by mlspec:

* ``MLSPEC_SERVING``: JSON with the Deployment's rollout, device and fallback, batching, auth and the request
  log's sample rate (the model is served under the InferenceService's name, ``--model-name``, as KServe routes);
* ``MLSPEC_MODEL_SHA256``: the plaintext model's sha256, pinned when the version was resolved (render or
  apply). The version's manifest must name the same digest, and the bytes loaded must have it: a folder that
  holds another version, or a tampered file, never serves.
* ``MLSPEC_VARIANTS`` instead, for a rollout the runtime routes itself (A/B, shadow, blue-green): JSON, one entry
  per variant (``name``, ``alias``, ``version``, ``sha256``), each downloaded into ``<model-dir>/<name>`` and
  checked the same way; the variants must take the same features in the same order.

A sealed ``model.onnx`` (an mlspec envelope) is decrypted in memory with the key its envelope names (``kms://``
through the configured provider, ``file://`` from a mounted Secret). Then this is the same server as on the
laptop: the Open Inference Protocol over REST (``--http-port``) and gRPC (``--grpc-port``), its metrics, the
request log (sealed with ``MLSPEC_REQUEST_LOG_KEY`` when set) and the device fallback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlspec.serving.config import ConfigError, ServingConfig

log = logging.getLogger("mlspec.serving")
SETTINGS_VARIABLE = "MLSPEC_SERVING"
SHA256_VARIABLE = "MLSPEC_MODEL_SHA256"
VARIANTS_VARIABLE = "MLSPEC_VARIANTS"
LOG_KEY_VARIABLE = "MLSPEC_REQUEST_LOG_KEY"
SETTINGS = ("rollout", "device", "fallback", "batching", "auth", "log_sample_rate", "threads", "lookup")


def runtime_config(model_name: str, model_dir: Path, environ: dict[str, str], ports: tuple[int, int]) -> ServingConfig:
    """The server's configuration for the version in ``model_dir``; ConfigError saying what is wrong."""
    try:
        settings: dict[str, Any] = json.loads(environ.get(SETTINGS_VARIABLE, "{}"))
    except ValueError as exc:
        raise ConfigError(f"${SETTINGS_VARIABLE} is not JSON: {exc}") from exc
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"${SETTINGS_VARIABLE} has unknown field(s): {', '.join(unknown)}")
    variants, manifest = _variants(model_dir, environ)
    features = manifest.get("features")
    deployment = model_name  # KServe routes /v2/models/<InferenceService name>/...: the name clients call
    rate = float(settings.get("log_sample_rate", 0.0))
    seal = environ.get(LOG_KEY_VARIABLE)
    data: dict[str, Any] = {
        "deployment": deployment,
        "model_name": str(manifest.get("model") or model_name),
        "features": features,
        "variants": variants,
        "host": "0.0.0.0",  # a pod's port: reached only through the mesh and its policies
        "port": ports[0],
        "grpc_port": ports[1],
        "device": settings.get("device", "cpu"),
        "fallback": settings.get("fallback", "cpu"),
        "batching": settings.get("batching", True),
        "rollout": settings.get("rollout") or {"strategy": "direct"},
        "auth": settings.get("auth"),
        "lookup": settings.get("lookup"),  # entity keys in: the namespace's Feast feature server
        "threads": settings.get("threads", 1),
        "log": {
            "path": str(Path(tempfile.gettempdir()) / "mlspec" / "requests.jsonl"),
            "sample_rate": rate,
            "enabled": rate > 0,
            **({"seal_key": seal} if seal else {}),
        },
    }
    return ServingConfig.from_dict(data)


def _variants(model_dir: Path, environ: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The variants to serve, each checked against its pinned digest, and the first one's manifest."""
    raw = environ.get(VARIANTS_VARIABLE)
    if raw is None:
        manifest = _verified(model_dir, environ.get(SHA256_VARIABLE, ""))
        return [_variant("stable", "stable", model_dir, manifest)], manifest
    try:
        pinned = json.loads(raw)
        wanted = [(str(v["name"]), str(v["alias"]), str(v["sha256"])) for v in pinned]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"${VARIANTS_VARIABLE} is not a list of variants with name, alias and sha256: {exc}") from exc
    if not wanted:
        raise ConfigError(f"${VARIANTS_VARIABLE} lists no variant")
    variants, first = [], None
    for name, alias, sha256 in wanted:
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"${VARIANTS_VARIABLE}: {name!r} is not a variant name")
        manifest = _verified(model_dir / name, sha256)
        if first is not None and manifest.get("features") != first.get("features"):
            raise ConfigError(
                f"variant {name!r} takes other features than {variants[0]['name']!r}: every variant must take "
                "the same features in the same order"
            )
        first = first or manifest
        variants.append(_variant(name, alias, model_dir / name, manifest))
    assert first is not None
    return variants, first


def _verified(model_dir: Path, pinned: str) -> dict[str, Any]:
    """The manifest of the version in ``model_dir``, refused unless it names the ``pinned`` digest (when one is)."""
    manifest = _manifest(model_dir)
    sha256 = str(manifest.get("model_sha256", ""))
    pinned = pinned.strip().lower()
    if pinned and pinned != sha256:
        raise ConfigError(
            f"{model_dir} holds {manifest.get('model')} version {manifest.get('version')} with sha256 {sha256}, "
            f"not the pinned {pinned}: refusing to serve another version than the one rendered"
        )
    features = manifest.get("features")
    if not isinstance(features, list) or not features:
        raise ConfigError(f"{model_dir}/manifest.json names no features (published by an older mlspec?)")
    return manifest


def _variant(name: str, alias: str, model_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "alias": alias, "version": str(manifest.get("version", "1")),
            "path": str(model_dir / "model.onnx"), "sha256": str(manifest.get("model_sha256", ""))}  # fmt: skip


def _manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc} (is storageUri a registered version?)") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != "onnx":
        raise ConfigError(f"{path} is not an mlspec model manifest")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Parse KServe's arguments, build the configuration, and serve until SIGTERM; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.serving.kserve", description=__doc__)
    parser.add_argument("--model-name", required=True, help="the InferenceService's name (KServe's {{.Name}})")
    parser.add_argument("--model-dir", default="/mnt/models", help="where the storage initializer put the version")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--grpc-port", type=int, default=8081)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ports = (args.http_port, args.grpc_port)
        config = runtime_config(args.model_name, Path(args.model_dir), dict(os.environ), ports)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 1
    folder = Path(tempfile.gettempdir()) / "mlspec"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / "serving.json"
    path.write_text(config.to_json(), encoding="utf-8")
    from mlspec.serving.server import run

    return run(str(path))


if __name__ == "__main__":
    sys.exit(main())
