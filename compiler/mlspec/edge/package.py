"""Build an edge package: the ONNX model (optionally int8), a manifest, its Ed25519 signature and the public key.

Layout of ``<folder>/`` (and of ``<tarball>``, the same files under one top folder):

- ``model.onnx``: the registered model, or its int8 quantization when the spec asks;
- ``signer.pub``: the signer's public key (PEM), for convenience: verification trusts a key or pin the verifier
  already holds, never this file alone;
- ``manifest.json``: canonical JSON (see :func:`mlspec.edge.verify.canonical_json`) with the deployment, the model
  (name, version, the registered file's sha256), every other file's sha256 and size, the input/output schema,
  the quantization, the accuracy and size/latency reports, the creation time and the signer's fingerprint;
- ``manifest.sig``: the Ed25519 signature of ``manifest.json``'s exact bytes.

The folder is written to a temporary sibling, verified, then renamed into place; the
tarball is written atomically and deterministically (the same folder, the same bytes).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.atomic import atomic_write, current_umask
from mlspec.edge.errors import EdgeBuildError
from mlspec.edge.signing import ALGORITHM, Signer, fingerprint, key_id, public_pem
from mlspec.edge.verify import (
    FORMAT,
    MANIFEST,
    MODEL,
    PUBLIC_KEY,
    SCHEMA_VERSION,
    SIGNATURE,
    Manifest,
    canonical_json,
    sha256_hex,
    tar_bytes,
    verify_package,
)

if TYPE_CHECKING:
    import numpy as np

    from mlspec.edge.quantize import TestSplit

QUANTIZE = ("none", "int8")


@dataclass(frozen=True)
class PackageRequest:
    """What one package is built from. ``features``: name and dtype of each input column, in order (default: the
    names the model's ``mlspec.features`` metadata records). ``sample_rows`` time the model when there is no
    test split (default: zeros)."""

    deployment: str
    environment: str
    model_name: str
    model_version: str
    model_bytes: bytes = field(repr=False)
    quantize: str = "none"
    max_accuracy_drop: float = 0.01
    features: tuple[dict[str, str], ...] | None = None
    test_split: TestSplit | None = None
    sample_rows: np.ndarray | None = None
    build_key: str = ""


@dataclass(frozen=True)
class BuiltPackage:
    """A package as written and verified."""

    folder: Path
    tarball: Path | None
    manifest: Manifest


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _input_schema(described: dict[str, Any], request: PackageRequest) -> list[dict[str, Any]]:
    inputs = [dict(i) for i in described["inputs"]]
    if len(inputs) != 1 or len(inputs[0]["shape"]) != 2:
        return inputs  # not mlspec's [batch, F] layout: the tensors are described as they are
    width = inputs[0]["shape"][1]
    recorded = [n for n in described["metadata"].get("mlspec.features", "").split(",") if n]
    features = list(request.features) if request.features is not None else [{"name": n} for n in recorded]
    if recorded and [f["name"] for f in features] != recorded:
        raise EdgeBuildError(
            f"the model was trained on the features {recorded}, but the feature service lists "
            f"{[f['name'] for f in features]}: retrain the model or point the Deployment at its features"
        )
    if features and isinstance(width, int) and len(features) != width:
        raise EdgeBuildError(f"the model takes {width} input columns, but {len(features)} features are named")
    inputs[0]["features"] = [
        {"index": i, "name": f["name"], "dtype": f.get("dtype") or inputs[0]["dtype"]} for i, f in enumerate(features)
    ]
    return inputs


def _timing_rows(request: PackageRequest, described: dict[str, Any]) -> np.ndarray:
    import numpy as np

    if request.test_split is not None:
        return request.test_split.x
    if request.sample_rows is not None:
        return request.sample_rows
    shape = described["inputs"][0]["shape"] if described["inputs"] else []
    width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else 1
    return np.zeros((1, width), dtype=np.float32)


def build_package(
    request: PackageRequest,
    signer: Signer,
    folder: Path,
    tarball: Path | None = None,
    *,
    created_at: str | None = None,
) -> BuiltPackage:
    """Build, sign and verify the package into ``folder`` (replacing what is there) and, when given, ``tarball``.

    With ``quantize: int8`` the model is quantized and both models are scored on the request's test split
    (required): a drop of a metric beyond ``max_accuracy_drop`` raises EdgeBuildError and writes nothing.
    """
    from mlspec import __version__
    from mlspec.edge import benchmark
    from mlspec.edge.quantize import METHOD, WEIGHT_TYPE, accuracy_report, describe, quantize_int8

    if request.quantize not in QUANTIZE:
        raise EdgeBuildError(f"quantize must be one of {', '.join(QUANTIZE)}, not {request.quantize!r}")
    described = describe(request.model_bytes)
    inputs = _input_schema(described, request)
    packaged = request.model_bytes
    quantized: bytes | None = None
    quantization: dict[str, Any] = {"method": "none"}
    accuracy: dict[str, Any] = {
        "checked": False,
        "reason": "quantize: none; model.onnx is the registered model, byte for byte (model.source_sha256)",
    }
    if request.quantize == "int8":
        if request.test_split is None:
            raise EdgeBuildError("quantize: int8 needs the test split to check the quantized model's accuracy")
        quantized = quantize_int8(request.model_bytes)
        accuracy = accuracy_report(request.model_bytes, quantized, request.test_split, request.max_accuracy_drop)
        packaged = quantized
        from importlib.metadata import version

        quantization = {
            "method": "int8",
            "tool": METHOD,
            "weights": WEIGHT_TYPE,
            "activations": "QUInt8, quantized per batch at run time (dynamic)",
            "pre_process": "quant_pre_process(skip_symbolic_shape=True)",
            "onnxruntime": version("onnxruntime"),
        }
    performance = benchmark.report(request.model_bytes, quantized, _timing_rows(request, described))
    public = signer.public_key()
    files = {MODEL: packaged, PUBLIC_KEY: public_pem(public)}
    created = created_at or _now()
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "deployment": request.deployment,
        "environment": request.environment,
        "model": {
            "name": request.model_name,
            "version": str(request.model_version),
            "source_sha256": sha256_hex(request.model_bytes),
            "source_bytes": len(request.model_bytes),
            "task": described["metadata"].get("mlspec.task"),
            "opset": described["opset"],
        },
        "files": {name: {"sha256": sha256_hex(data), "size": len(data)} for name, data in sorted(files.items())},
        "inputs": inputs,
        "outputs": described["outputs"],
        "quantization": quantization,
        "accuracy": accuracy,
        "performance": performance,
        "runtime": {"format": "onnx", "opset": describe(packaged)["opset"], "providers": ["CPUExecutionProvider"]},
        "created_at": created,
        "signer": {
            "algorithm": ALGORITHM,
            "key_ref": signer.ref,
            "key_id": key_id(public),
            "public_key_sha256": fingerprint(public),
        },
        "build": {"key": request.build_key, "mlspec": __version__},
    }
    raw = canonical_json(manifest)
    files[MANIFEST] = raw
    files[SIGNATURE] = signer.sign(raw)
    built = _write_folder(folder, files, public)
    if tarball is not None:
        mtime = int(dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp())
        atomic_write(tarball, tar_bytes(folder, tarball.name.removesuffix(".tar.gz"), mtime))
        verify_package(tarball, public)
    return BuiltPackage(folder, tarball, built)


def _write_folder(folder: Path, files: dict[str, bytes], public: bytes) -> Manifest:
    """Write into a temporary sibling, verify it, then swap it into place (readers see the old or the new one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    old: Path | None = None
    try:
        for name, data in files.items():
            path = staging / name
            with open(path, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            path.chmod(0o644 & ~current_umask())  # readable as the umask allows (0600 under an apply)
        staging.chmod(0o755 & ~current_umask())
        manifest = verify_package(staging, public)  # what was written is what was signed
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:  # put the previous package back, unless a concurrent build already placed its own
            if folder.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return Manifest(manifest.data, manifest.raw, manifest.files, str(folder), manifest.signer)
