"""mlspec's server as KServe's runtime (``python -m mlspec.serving.kserve``), as a real process: it serves the
version folder the storage initializer downloads (published by the register step's own code, sealed with the
environment's key), only when it is the pinned version, and checks the Deployment's API keys."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")

from mlspec.crypto import KeyResolver, encrypt
from mlspec.runtime.object_store import open_store, publish_model_version, version_folder
from mlspec.serving.config import ConfigError
from mlspec.serving.kserve import runtime_config
from tests.unit.test_serving import STABLE_W, linear_onnx, ort_scores

COMPILER = Path(__file__).resolve().parents[2] / "compiler"
FEATURES = ["a", "b", "c"]
KEY = "k-0123456789abcdef"


def published(tmp_path: Path, *, features: list[str] = FEATURES) -> tuple[Path, str, Path]:
    """A sealed version as the register step publishes it to a file:// store: (its folder, sha256, plain model)."""
    plain = tmp_path / "plain.onnx"
    sha = linear_onnx(plain, STABLE_W)
    (tmp_path / "keys").mkdir()
    key_ref = "file://keys/env.key"
    kek = KeyResolver(tmp_path, create=True).resolve(key_ref)
    identity = "mlspec:prod/fraud-detector/versions/3/model.onnx"
    sealed = encrypt(plain.read_bytes(), kek, identity)
    store_uri = (tmp_path / "store").as_uri()
    publish_model_version(
        open_store(store_uri), store_uri, model="fraud-detector", version=3, model_bytes=sealed, sha256=sha,
        sealed={"key_ref": key_ref, "key_id": kek.key_id, "identity": identity}, features=features,
    )  # fmt: skip
    return tmp_path / "store" / version_folder("fraud-detector", 3), sha, plain


def settings(**extra: Any) -> str:
    base = {"rollout": {"strategy": "direct"}, "log_sample_rate": 0.0}
    return json.dumps({**base, **extra})


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(model_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"runtime-{len(started)}.log"
        full = {**os.environ, "PYTHONPATH": str(COMPILER), "MLSPEC_PROJECT_ROOT": str(tmp_path), **env}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlspec.serving.kserve", "--model-name", "fraud-api", "--model-dir",
                 str(model_dir), "--http-port", "0", "--grpc-port", "0"],
                stdout=out, stderr=out, env=full, cwd=tmp_path,
            )  # fmt: skip
        started.append(proc)
        return proc, log

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def url_when_ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    from mlspec.serving import client

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        found = re.findall(r"listening on (http://\S+)", log.read_text())
        if found and client.is_ready(found[-1]):
            return str(found[-1])
        time.sleep(0.05)
    raise AssertionError(log.read_text())


def test_the_runtime_serves_the_pinned_sealed_version_and_checks_api_keys(runtime: Any, tmp_path: Path) -> None:
    import http.client

    folder, sha, plain = published(tmp_path)
    auth = {"method": "api_key", "api_key_env": "MLSPEC_SECRET_PROD_FRAUD_KEYS", "open_routes": ["health"]}
    proc, log = runtime(folder, {
        "MLSPEC_SERVING": settings(auth=auth), "MLSPEC_MODEL_SHA256": sha, "MLSPEC_SECRET_PROD_FRAUD_KEYS": KEY,
    })  # fmt: skip
    url = url_when_ready(proc, log)
    host, port = url.removeprefix("http://").split(":")
    rows = [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]
    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": rows}]})

    def post(headers: dict[str, str]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", "/v2/models/fraud-api/infer", body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()

    assert post({})[0] == 401 and post({"X-API-Key": "wrong"})[0] == 401
    status, answer = post({"X-API-Key": KEY})
    assert status == 200 and answer["model_version"] == "3"
    assert answer["outputs"][0]["data"] == pytest.approx(ort_scores(plain, rows))
    # decrypted in memory only: the folder holds the envelope, no plaintext model appeared anywhere
    assert (folder / "model.onnx").read_bytes() != plain.read_bytes()
    plain_digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    assert all(
        hashlib.sha256(f.read_bytes()).hexdigest() != plain_digest
        for f in tmp_path.rglob("*") if f.is_file() and f != plain
    )  # fmt: skip
    assert re.search(r"grpc listening on \S+:\d+", log.read_text()), log.read_text()


def test_another_version_than_the_pinned_one_never_serves(runtime: Any, tmp_path: Path) -> None:
    folder, _sha, _plain = published(tmp_path)
    proc, log = runtime(folder, {"MLSPEC_SERVING": settings(), "MLSPEC_MODEL_SHA256": "ab" * 32})
    assert proc.wait(timeout=30) == 1
    assert "not the pinned " + "ab" * 32 in log.read_text()


def test_a_tampered_model_file_never_serves(runtime: Any, tmp_path: Path) -> None:
    folder, sha, _plain = published(tmp_path)
    other = tmp_path / "other.onnx"
    linear_onnx(other, [9.0, 9.0, 9.0])
    (folder / "model.onnx").chmod(0o600)
    (folder / "model.onnx").write_bytes(other.read_bytes())  # the manifest still says the pinned digest
    proc, log = runtime(folder, {"MLSPEC_SERVING": settings(), "MLSPEC_MODEL_SHA256": sha})
    assert proc.wait(timeout=30) == 1
    assert "sha256 mismatch" in log.read_text()


def test_the_runtime_settings_are_checked(tmp_path: Path) -> None:
    folder, sha, _plain = published(tmp_path)
    with pytest.raises(ConfigError, match="unknown field"):
        runtime_config("fraud-api", folder, {"MLSPEC_SERVING": settings(replicas=3)}, (0, 0))
    with pytest.raises(ConfigError, match="not JSON"):
        runtime_config("fraud-api", folder, {"MLSPEC_SERVING": "{"}, (0, 0))
    with pytest.raises(ConfigError, match=r"manifest\.json"):
        runtime_config("fraud-api", tmp_path / "nowhere", {"MLSPEC_SERVING": settings()}, (0, 0))
    config = runtime_config(
        "fraud-api", folder, {"MLSPEC_SERVING": settings(), "MLSPEC_MODEL_SHA256": sha}, (8080, 8081)
    )
    assert config.features == tuple(FEATURES) and config.variants[0].sha256 == sha
    assert (config.port, config.grpc_port, config.host) == (8080, 8081, "0.0.0.0")
    unfeatured = tmp_path / "old"
    unfeatured.mkdir()
    folder2, _, _ = published(unfeatured, features=[])
    with pytest.raises(ConfigError, match="names no features"):
        runtime_config("fraud-api", folder2, {"MLSPEC_SERVING": settings()}, (0, 0))


def variant_folders(tmp_path: Path, weights: dict[str, list[float]]) -> tuple[Path, list[dict[str, str]]]:
    """One version per variant, published to a file:// store and laid out as KServe's ``storageUris`` download
    them (``<model dir>/<variant>``); returns the model dir and the pinned ``MLSPEC_VARIANTS`` entries."""
    import shutil

    store_uri = (tmp_path / "store").as_uri()
    model_dir, pinned = tmp_path / "mnt-models", []
    for number, (name, weight) in enumerate(weights.items(), start=1):
        plain = tmp_path / f"{name}.onnx"
        sha = linear_onnx(plain, weight)
        publish_model_version(
            open_store(store_uri), store_uri, model="churn-model", version=number, model_bytes=plain.read_bytes(),
            sha256=sha, sealed=None, features=FEATURES,
        )  # fmt: skip
        shutil.copytree(tmp_path / "store" / version_folder("churn-model", number), model_dir / name)
        pinned.append({"name": name, "alias": name, "version": str(number), "sha256": sha})
    return model_dir, pinned


def test_ab_variants_in_one_runtime_are_sticky_across_replicas(runtime: Any, tmp_path: Path) -> None:
    import urllib.request

    model_dir, pinned = variant_folders(tmp_path, {"champion": STABLE_W, "challenger": [1.0, 1.0, 1.0]})
    rollout = {"strategy": "ab", "sticky_key": "customer_id",
               "variants": [{"alias": "champion", "weight": 50}, {"alias": "challenger", "weight": 50}]}  # fmt: skip
    env = {"MLSPEC_SERVING": settings(rollout=rollout), "MLSPEC_VARIANTS": json.dumps(pinned)}
    replicas = [url_when_ready(*runtime(model_dir, env)) for _ in range(2)]  # two pods of one InferenceService

    def version_for(url: str, customer: int) -> str:
        body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[1.0, 2.0, 3.0]]}],
                "parameters": {"customer_id": customer}}  # fmt: skip
        request = urllib.request.Request(
            f"{url}/v2/models/fraud-api/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return str(json.loads(reply.read())["model_version"])

    seen = {c: [version_for(url, c) for url in replicas] for c in range(100001, 100041)}
    assert all(a == b for a, b in seen.values()), "a customer meets the same variant on every replica"
    assert {a for a, _ in seen.values()} == {"1", "2"}, "both variants serve"


def test_every_variant_is_checked_against_its_pin(tmp_path: Path) -> None:
    model_dir, pinned = variant_folders(tmp_path, {"stable": STABLE_W, "shadow": [1.0, 1.0, 1.0]})
    shadow = {"MLSPEC_SERVING": settings(rollout={"strategy": "shadow", "challenger": "challenger"})}
    config = runtime_config("fraud-api", model_dir, {**shadow, "MLSPEC_VARIANTS": json.dumps(pinned)}, (0, 0))
    assert [(v.name, v.version, v.sha256) for v in config.variants] == [
        (p["name"], p["version"], p["sha256"]) for p in pinned
    ]
    assert config.variants[1].path == str(model_dir / "shadow" / "model.onnx")
    wrong = [pinned[0], {**pinned[1], "sha256": "ab" * 32}]
    with pytest.raises(ConfigError, match=r"shadow holds churn-model version 2 .* not the pinned abab"):
        runtime_config("fraud-api", model_dir, {**shadow, "MLSPEC_VARIANTS": json.dumps(wrong)}, (0, 0))
    escaping = [pinned[0], {**pinned[1], "name": "../stable"}]
    with pytest.raises(ConfigError, match="is not a variant name"):
        runtime_config("fraud-api", model_dir, {**shadow, "MLSPEC_VARIANTS": json.dumps(escaping)}, (0, 0))
    manifest = model_dir / "shadow" / "manifest.json"
    manifest.chmod(0o600)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "features": ["c", "b", "a"]}))
    with pytest.raises(ConfigError, match="same features in the same order"):
        runtime_config("fraud-api", model_dir, {**shadow, "MLSPEC_VARIANTS": json.dumps(pinned)}, (0, 0))


def test_a_shadow_variant_in_the_runtime_is_compared_and_reported_in_its_metrics(runtime: Any, tmp_path: Path) -> None:
    import urllib.request

    model_dir, pinned = variant_folders(tmp_path, {"stable": STABLE_W, "shadow": [1.0, 1.0, 1.0]})
    rollout = {"strategy": "shadow", "challenger": "challenger", "sample": 100}
    url = url_when_ready(*runtime(model_dir, {"MLSPEC_SERVING": settings(rollout=rollout),
                                              "MLSPEC_VARIANTS": json.dumps(pinned)}))  # fmt: skip
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[1.0, 2.0, 3.0]]}]}
    for _ in range(5):
        request = urllib.request.Request(
            f"{url}/v2/models/fraud-api/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read())["model_version"] == "1", "callers get the stable answer"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the mirror answers after the caller's answer
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        if re.search(r"^mlspec_shadow_requests_total\{[^}]*\} 5(\.0)?$", metrics, re.M):
            break
        time.sleep(0.05)
    assert re.search(r"^mlspec_shadow_requests_total\{[^}]*\} 5(\.0)?$", metrics, re.M), metrics
    assert re.search(r"^mlspec_shadow_mean_abs_diff\{[^}]*\} [1-9]", metrics, re.M), metrics  # 14 vs 6: they differ


def test_missing_entities_are_refused_by_row_or_imputed_as_the_spec_says() -> None:
    import math

    from mlspec.serving.feature_lookup import LookupFailed, feature_rows

    columns = {"a": [1.0, None], "b": [2.0, None], "customer_id": [7, 8]}
    keys = {"customer_id": [7, 8]}
    with pytest.raises(LookupFailed, match=r"row 1 \(customer_id=8\)") as refused:
        feature_rows(columns, ("a", "b"), keys)
    assert refused.value.status == 404
    rows = feature_rows(columns, ("b", "a"), keys, impute=True)
    assert rows[0].tolist() == [2.0, 1.0] and all(math.isnan(v) for v in rows[1])
