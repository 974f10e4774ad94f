"""Encryption at rest end to end: real steps (Feast, torch, ONNX, MLflow) into an environment with a file key,
ciphertext on disk, and the real model server decrypting in memory (or refusing altered bytes)."""

from __future__ import annotations

import dataclasses
import http.client
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from mlspec.crypto import MAGIC, IntegrityError, KeyResolver, decrypt_file, open_envelope
from mlspec.runtime.context import RuntimeContext
from mlspec.serving import process
from mlspec.targets.base import TargetError
from mlspec.targets.local.registry import Registry
from tests.integration.test_training import load_spec, platform, run_steps

pytestmark = pytest.mark.slow
KEY = "file://.mlspec/keys/local.key"
__all__ = ["platform"]  # the module-scoped project fixture, shared with test_training


@pytest.fixture(scope="module")
def trained(platform: tuple[Path, RuntimeContext], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root, ctx = platform
    secure = dataclasses.replace(ctx, kms_key=KEY)
    assert RuntimeContext.from_json(secure.to_json()).kms_key == KEY  # travels to every step
    spec = load_spec(root, "fraud-detector")
    spec["spec"].pop("search", None)  # speed: no trials, and no gates, so the short training registers a version
    spec["spec"].setdefault("evaluation", {})["gates"] = {}
    summary = run_steps(spec, secure, tmp_path_factory.mktemp("enc"), epochs=2)
    return {"root": root, "ctx": secure, **summary}


def test_artifacts_are_ciphertext_on_disk_and_decrypt_to_the_model(trained: dict[str, Any]) -> None:
    root = trained["root"]
    key = root / ".mlspec" / "keys" / "local.key"
    assert key.stat().st_size == 32 and key.stat().st_mode & 0o777 == 0o600  # created on first use (local)
    keys = KeyResolver(root)
    registered = Path(trained["onnx_path"])
    blob = registered.read_bytes()
    assert blob.startswith(MAGIC)
    with pytest.raises(Exception):  # noqa: B017  (onnx raises its own decode errors)
        onnx.load(str(registered))
    plain = decrypt_file(registered, keys)
    assert plain[:2] != blob[:2] and onnx.load_from_string(plain).graph.input[0].name == "input"
    import hashlib

    assert hashlib.sha256(plain).hexdigest() == trained["onnx_sha256"] == trained["_sha"]
    header = open_envelope(blob)
    assert header.kek_ref == KEY and header.identity.endswith("/model/model.onnx") and header.sha256 == trained["_sha"]
    # the export step's output and the reference data are envelopes as well
    assert Path(trained["_paths"]["onnx"]).read_bytes().startswith(MAGIC)
    reference = Path(trained["reference_data"])
    assert reference.read_bytes().startswith(MAGIC)
    with pytest.raises(Exception):  # noqa: B017
        pd.read_parquet(reference)
    frame = pd.read_parquet(__import__("io").BytesIO(decrypt_file(reference, keys)))
    assert list(frame.columns) == trained["features"] and len(frame) > 0
    torch_files = list((reference.parent.parent / "torch").iterdir())
    assert torch_files and all(f.read_bytes().startswith(MAGIC) for f in torch_files)
    registry = Registry(trained["ctx"].tracking_uri)
    version = registry.version("fraud-detector", version=trained["version"])
    assert version is not None and version.tags["encryption_key_ref"] == KEY
    assert registry.verify(version, trained["onnx_sha256"], keys) == trained["onnx_sha256"]


def _infer(url: str, rows: list[list[float]]) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]}
    try:
        conn.request("POST", "/v2/models/fraud-api/infer", body=json.dumps(body).encode())
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def _config(tmp: Path, trained: dict[str, Any], path: Path) -> Path:
    variant = {"name": "stable", "alias": "champion", "version": trained["version"], "path": str(path),
               "sha256": trained["onnx_sha256"]}  # fmt: skip
    config = {"deployment": "fraud-api", "model_name": "fraud-detector", "host": "127.0.0.1", "port": 0,
              "features": trained["features"], "variants": [variant], "rollout": {"strategy": "direct"},
              "log": {"path": str(tmp / "requests.jsonl"), "sample_rate": 0.0, "enabled": False}}  # fmt: skip
    out = tmp / "config.json"
    out.write_text(json.dumps(config))
    return out


def test_server_decrypts_in_memory_and_predicts(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = trained["root"]
    monkeypatch.setenv("MLSPEC_PROJECT_ROOT", str(root))  # where the server resolves the file:// key
    log = tmp_path / "server.log"
    pid = process.start(_config(tmp_path, trained, Path(trained["onnx_path"])), log, timeout=60)
    try:
        url = next(line.split("listening on ")[1].split()[0] for line in log.read_text().splitlines()
                   if "listening on" in line)  # fmt: skip
        rng = np.random.default_rng(0)
        rows = rng.normal(size=(5, len(trained["features"]))).astype(np.float32)
        status, reply = _infer(url, rows.tolist())
        assert status == 200, reply
        plain = decrypt_file(trained["onnx_path"], KeyResolver(root))
        expected = ort.InferenceSession(plain, providers=["CPUExecutionProvider"]).run(None, {"input": rows})[0]
        np.testing.assert_allclose(np.asarray(reply["outputs"][0]["data"]).ravel(), expected.ravel(), rtol=1e-5)
    finally:
        process.stop(pid)


@pytest.mark.parametrize("where", ["header", "payload", "tag", "key"])
def test_altered_file_or_wrong_key_is_refused(
    trained: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    root = trained["root"]
    blob = bytearray(Path(trained["onnx_path"]).read_bytes())
    cut = len(blob) - len(open_envelope(bytes(blob)).ciphertext)
    home = root
    if where == "key":  # the right file, another project's key under the same reference
        home = tmp_path / "other"
        KeyResolver(home, create=True).resolve(KEY)
    else:
        blob[{"header": cut - 5, "payload": cut + 100, "tag": len(blob) - 3}[where]] ^= 0x01
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(blob))
    monkeypatch.setenv("MLSPEC_PROJECT_ROOT", str(home))
    with pytest.raises(process.ServingStartError, match=r"cannot decrypt .*refusing to serve"):
        process.start(_config(tmp_path, trained, path), tmp_path / "server.log", timeout=60)
    registry = Registry(trained["ctx"].tracking_uri)
    version = registry.version("fraud-detector", version=trained["version"])
    assert version is not None
    with pytest.raises(TargetError, match="cannot decrypt"):
        registry.verify(dataclasses.replace(version, onnx_path=str(path)), None, KeyResolver(home))
    with pytest.raises(IntegrityError):
        decrypt_file(path, KeyResolver(home))
