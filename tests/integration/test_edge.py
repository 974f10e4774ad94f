"""Edge packages from a really trained, registered (and encrypted) model: Feast, torch, ONNX, MLflow, onnxruntime's
quantizer and cryptography, no mocks. One training per module; every build reuses it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlspec.runtime.context import RuntimeContext
from mlspec.spec.deployment import Deployment
from mlspec.spec.training import TrainingPipeline
from tests.conftest import CliResult, copy_platform
from tests.integration.test_training import load_spec, platform, run_steps

pytestmark = pytest.mark.slow
__all__ = ["platform"]  # the module-scoped project fixture, shared with test_training

MODEL = "fraud-edge-model"
KEY = "file://.mlspec/keys/local.key"
METRICS = {"auc": ">= 0.5", "accuracy": ">= 0.5", "recall": ">= 0.0", "precision": ">= 0.0", "f1": ">= 0.0",
           "logloss": "<= 10"}  # fmt: skip


@dataclasses.dataclass
class Trained:
    root: Path
    ctx: RuntimeContext
    spec: dict[str, Any]
    pipeline: TrainingPipeline
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def trained(platform: tuple[Path, RuntimeContext], tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """fraud-detector's spec, renamed, trained once with the environment's key on: the registered ONNX is sealed."""
    root, ctx = platform
    sealed = dataclasses.replace(ctx, kms_key=KEY)
    spec = load_spec(root, "fraud-detector")
    spec["metadata"]["name"] = MODEL
    spec["spec"]["evaluation"]["gates"] = METRICS
    spec["spec"]["hyperparameters"]["epochs"] = 8
    summary = run_steps(spec, sealed, tmp_path_factory.mktemp("edge-train"))
    assert summary["version"] == "1" and summary["promoted"], summary
    return Trained(root, sealed, spec, TrainingPipeline.model_validate(spec), summary)


def deployment(name: str, edge: dict[str, Any], **model: Any) -> Deployment:
    return Deployment.model_validate({
        "apiVersion": "mlspec/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"mode": "edge", "model": {"name": MODEL, **(model or {"alias": "champion"})}, "edge": edge},
    })  # fmt: skip


def engine(t: Trained, kms_key: str | None = KEY) -> Any:
    from mlspec.targets.local.edge import EdgeEngine
    from mlspec.targets.local.paths import LocalPaths
    from mlspec.targets.local.registry import Registry

    paths = LocalPaths("local", t.root, t.root / ".mlspec" / "local", kms_key)
    return EdgeEngine(paths, lambda: Registry(t.ctx.tracking_uri), context=t.ctx)  # opened when a build needs it


def full_model(t: Trained) -> bytes:
    """The registered model, decrypted here with the environment's key (independently of the engine)."""
    from mlspec.crypto import KeyResolver, is_envelope, read_plain

    path = t.summary["onnx_path"]
    assert is_envelope(Path(path).read_bytes()), "the registry holds ciphertext only"
    return read_plain(path, KeyResolver(t.root))


def held_out(t: Trained, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows, fetched and split here the way the pipeline's evaluate step does."""
    from mlspec.runtime import steps
    from mlspec.runtime.dataset import read_dataset
    from mlspec.runtime.model import split_index, to_arrays

    path = str(tmp_path / "split.parquet")
    steps.fetch_features(json.dumps(t.spec), t.ctx.to_json(), path)
    frame, features, label = read_dataset(path, t.ctx)
    data = to_arrays(frame, features, label, "binary_classification")
    test = data.slice(split_index(len(data.y), 0.2))
    return test.x, test.y


def scores(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["score"], {"input": x.astype(np.float32)})[0]
    return out


def signer_pem(t: Trained) -> bytes:
    from mlspec.edge import resolve_signer
    from mlspec.edge.signing import public_pem

    return public_pem(resolve_signer(KEY + ".ed25519", t.root).public_key())


def test_int8_package_of_a_registered_model_verifies_runs_and_reports_honestly(
    trained: Trained, tmp_path: Path
) -> None:
    from sklearn import metrics as sk

    from mlspec.edge import verify_package
    from mlspec.edge.runner import run

    t = trained
    edge = engine(t)
    events: list[str] = []
    ids = edge.build(deployment("fraud-edge", {"quantize": "int8", "max_accuracy_drop": 0.2}), t.pipeline, {},
                     progress=events.append)  # fmt: skip
    folder = t.root / ".mlspec" / "local" / "edge" / "fraud-edge" / "v1"
    assert ids["package"] == str(folder) and ids["model"] == MODEL and ids["model_version"] == "1"
    assert ids["quantized"] == "true" and Path(ids["tarball"]).name == "fraud-edge-v1.tar.gz"
    key_file = t.root / ".mlspec" / "keys" / "local.key.ed25519"
    assert key_file.is_file() and oct(key_file.stat().st_mode & 0o777) == "0o600"  # made on first use (local)
    assert any("checked on" in e for e in events), events

    manifest = verify_package(ids["tarball"], signer_pem(t))
    assert manifest.sha256 == ids["manifest_sha256"] == verify_package(folder, signer_pem(t)).sha256
    data = manifest.data
    full = full_model(t)
    packaged = manifest.model_bytes
    assert (
        data["model"]["source_sha256"] == t.summary["onnx_sha256"] and data["model"]["task"] == "binary_classification"
    )
    assert len(packaged) < len(full) and int(ids["size_bytes"]) == len(packaged)
    assert data["inputs"][0]["shape"] == ["batch", 8] and data["outputs"][0]["name"] == "score"
    assert [f["name"] for f in data["inputs"][0]["features"]] == t.summary["features"]

    # the accuracy report, recomputed here from an independent fetch of the test split
    x, y = held_out(t, tmp_path)
    a, b = scores(full, x), scores(packaged, x)
    accuracy = data["accuracy"]
    assert accuracy["split"]["rows"] == len(y) and accuracy["split"]["pipeline"] == MODEL
    assert accuracy["split"]["train_rows"] == int(_param(t, "train_rows"))
    expected = {
        "auc": (sk.roc_auc_score(y, a), sk.roc_auc_score(y, b)),
        "accuracy": (sk.accuracy_score(y, a >= 0.5), sk.accuracy_score(y, b >= 0.5)),
        "recall": (sk.recall_score(y, a >= 0.5, zero_division=0), sk.recall_score(y, b >= 0.5, zero_division=0)),
        "logloss": (sk.log_loss(y, np.clip(a, 1e-7, 1 - 1e-7), labels=[0, 1]),
                    sk.log_loss(y, np.clip(b, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }  # fmt: skip
    for metric, (full_value, int8_value) in expected.items():
        reported = accuracy["metrics"][metric]
        assert reported["full"] == pytest.approx(full_value, abs=1e-9), metric
        assert reported["quantized"] == pytest.approx(int8_value, abs=1e-9), metric
    assert accuracy["metrics"]["auc"]["full"] == pytest.approx(t.summary["metrics"]["auc"], abs=1e-4)  # as trained
    assert accuracy["metrics"]["logloss"]["drop"] == pytest.approx(expected["logloss"][1] - expected["logloss"][0])
    assert set(accuracy["metrics"]) == set(METRICS)

    # the package runs with onnxruntime and gives the int8 model's scores, close to the full model's
    ran = np.asarray(run(manifest, x)["score"], dtype=np.float32)
    np.testing.assert_array_equal(ran, b)
    assert float(np.max(np.abs(ran - a))) < 0.05 and accuracy["max_abs_score_diff"] == pytest.approx(
        float(np.max(np.abs(a.astype(np.float64) - b)))
    )
    perf = data["performance"]
    assert perf["full"]["bytes"] == len(full) and perf["quantized"]["bytes"] == len(packaged)

    status = edge.status("fraud-edge")
    assert status["signature_ok"] and status["model_version"] == "1" and status["quantized"] == "true"
    assert status["manifest_sha256"] == ids["manifest_sha256"] and edge.intact("fraud-edge", ids)
    # no plaintext dataset is left behind by the test-split fetch
    assert not list((t.root / ".mlspec" / "local" / "edge").glob(".test-split-*"))


def _param(t: Trained, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(t.ctx.tracking_uri, t.ctx.tracking_uri)
    return str(client.get_run(t.summary["run_id"]).data.params[name])


def test_quantize_none_reuse_rebuild_and_tampering(trained: Trained) -> None:
    from mlspec.edge import verify_package

    t = trained
    edge = engine(t)
    spec = deployment("fraud-plain", {"quantize": "none"}, version=1)
    ids = edge.build(spec, None, {"1": t.summary["onnx_sha256"]})  # no pipeline needed without quantization
    manifest = verify_package(ids["package"], signer_pem(t))
    assert manifest.model_bytes == full_model(t)  # exactly the registered model, decrypted
    assert manifest.data["accuracy"]["checked"] is False and ids["accuracy_drop"] == ""
    model_file = Path(ids["package"]) / "model.onnx"
    before = model_file.stat().st_mtime_ns

    events: list[str] = []
    assert edge.build(spec, None, {}, progress=events.append) == ids  # idempotent: reused, not rebuilt
    assert model_file.stat().st_mtime_ns == before and "reused" in events[0]

    # a tampered package is reported by status and built again by the next build
    data = bytearray(model_file.read_bytes())
    data[100] ^= 0xFF
    model_file.write_bytes(bytes(data))
    status = edge.status("fraud-plain")
    assert not status["signature_ok"] and status["problem"].startswith("model.onnx: sha256")
    assert not edge.intact("fraud-plain", ids)
    assert "INVALID: model.onnx: sha256" in engine(t).status_line("fraud-plain")
    healed = edge.build(spec, None, {})
    assert verify_package(healed["package"], signer_pem(t)).model_bytes == full_model(t)
    assert edge.status("fraud-plain")["signature_ok"]
    line = engine(t).status_line("fraud-plain")
    assert line.startswith(f"fraud-plain: edge package {MODEL} v1 (full), ") and line.endswith("; signature ok")

    # state's digest guards the registered model: a different recorded sha256 refuses to package it
    from mlspec.targets.base import TargetError

    with pytest.raises(TargetError, match="does not match the state's"):
        edge.build(spec, None, {"1": "0" * 64})


def test_too_strict_accuracy_drop_fails_naming_the_metric(trained: Trained, tmp_path: Path) -> None:
    from sklearn import metrics as sk

    from mlspec.edge.quantize import quantize_int8
    from mlspec.targets.base import TargetError

    t = trained
    full = full_model(t)
    x, y = held_out(t, tmp_path)
    a, b = scores(full, x), scores(quantize_int8(full), x)
    drops = {
        "auc": sk.roc_auc_score(y, a) - sk.roc_auc_score(y, b),
        "accuracy": sk.accuracy_score(y, a >= 0.5) - sk.accuracy_score(y, b >= 0.5),
        "logloss": sk.log_loss(y, np.clip(b, 1e-7, 1 - 1e-7), labels=[0, 1])
        - sk.log_loss(y, np.clip(a, 1e-7, 1 - 1e-7), labels=[0, 1]),
    }
    lost = [m for m, d in drops.items() if d > 1e-12]
    assert lost, f"int8 lost nothing on any metric ({drops}); the check below would prove nothing"
    with pytest.raises(TargetError) as failed:
        engine(t).build(deployment("fraud-strict", {"quantize": "int8", "max_accuracy_drop": 0.0}), t.pipeline, {})
    message = str(failed.value)
    assert message.startswith("edge package of fraud-strict: int8 quantization loses too much accuracy")
    for metric in lost:
        assert f"a drop of {drops[metric]:.3g} > max_accuracy_drop 0" in message, (metric, message)
    assert not (t.root / ".mlspec" / "local" / "edge" / "fraud-strict" / "v1").exists()


def test_signing_keys_fail_closed(trained: Trained) -> None:
    from mlspec.targets.base import TargetError

    t = trained
    with pytest.raises(TargetError, match=r"no signing provider is configured for kms://edge-signer"):
        engine(t).build(deployment("fraud-kms", {"signing_key": "kms://edge-signer"}), None, {})
    with pytest.raises(
        TargetError,
        match=r"need a named signing key: set the environment's spec\.encryption\.signing_key or the Deployment's spec\.edge\.signing_key",
    ):
        engine(t, kms_key="kms://bank-prod").build(deployment("fraud-kms", {}), None, {})
    assert not (t.root / ".mlspec" / "local" / "edge" / "fraud-kms").exists()
    plan = engine(t).plan_step(deployment("fraud-edge", {"quantize": "int8"}))
    assert "quantize to int8" in plan and KEY + ".ed25519" in plan


def test_cli_verifies_what_the_engine_built(trained: Trained, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    t = trained
    ids = engine(t).build(deployment("fraud-cli", {}), None, {})
    pem = tmp_path / "signer.pem"
    pem.write_bytes(signer_pem(t))
    ok = cli("edge", "verify", ids["tarball"], "--public-key", str(pem))
    assert ok.code == 0 and f"{MODEL} v1 (not quantized)" in ok.out
    x, _ = held_out(t, tmp_path)
    ran = cli("edge", "run", ids["tarball"], "--public-key", str(pem), "--input", json.dumps(x[:2].tolist()))
    assert ran.code == 0, ran.err
    np.testing.assert_allclose(json.loads(ran.out)["outputs"]["score"], scores(full_model(t), x[:2]), rtol=0, atol=0)


EDGE_SPEC = """\
apiVersion: mlspec/v1
kind: Deployment
metadata: {name: fraud-edge, owner: payments-ml}
spec:
  mode: edge
  model: {name: fraud-detector, alias: champion}
  edge: {quantize: int8, max_accuracy_drop: 0.02}
"""


def test_renderer_writes_the_build_descriptor_without_key_material(tmp_path: Path) -> None:
    from mlspec.app.project import Project

    root = copy_platform(tmp_path)
    (root / "specs" / "deployments" / "fraud-edge.yaml").write_text(EDGE_SPEC)
    project = Project.open(root)
    _, local = project.render("local", ["edge"], use_cache=False)
    assert local is not None and local.ok, local and local.diagnostics
    assert [a.path for a in local.artifacts] == ["edge/fraud-edge.json", "manifest.json"]
    document = json.loads(local.artifacts[0].content)
    assert document["signing"] == {"algorithm": "Ed25519", "key": "file://.mlspec/keys/local.key.ed25519"}
    assert document["quantize"] == "int8" and document["accuracy_check"]["max_accuracy_drop"] == 0.02
    assert document["accuracy_check"]["metrics"] == ["auc", "recall"]  # fraud-detector's gates (auc is primary)
    assert document["model"]["training_pipeline"] == "TrainingPipeline/fraud-detector"
    names = [f["name"] for f in document["features"]["inputs"]]
    assert names[:2] == ["txn_count_7d", "txn_amount_sum_7d"] and len(names) == 8
    assert document["features"]["tensor"]["shape"] == ["batch", 8]
    assert "PRIVATE" not in local.artifacts[0].content.decode()

    # prod keys with kms://: the environment's signing key signs, and without one an edge Deployment must name its own
    _, prod = project.render("prod", ["edge"], use_cache=False)
    assert prod is not None and prod.ok, prod.diagnostics
    assert json.loads(prod.artifacts[0].content)["signing"]["key"] == "kms://prod-edge-signing"
    prod_env = root / "environments" / "prod.yaml"
    prod_env.write_text(prod_env.read_text().replace(" signing_key: kms://prod-edge-signing,", ""))
    project = Project.open(root)
    _, prod = project.render("prod", ["edge"], use_cache=False)
    assert prod is not None and not prod.ok
    (problem,) = prod.diagnostics
    assert (
        problem.code == "missing-field"
        and "spec.encryption.signing_key or the Deployment's spec.edge.signing_key" in problem.message
    )
    assert problem.location.file.endswith("fraud-edge.yaml")
    (root / "specs" / "deployments" / "fraud-edge.yaml").write_text(
        EDGE_SPEC.replace("max_accuracy_drop: 0.02}", "max_accuracy_drop: 0.02, signing_key: kms://edge-signer}")
    )
    _, signed = Project.open(root).render("prod", ["edge", "kubernetes"], use_cache=False)
    assert signed is not None and signed.ok, signed and signed.diagnostics
    rendered = {a.path: a.content for a in signed.artifacts}
    assert json.loads(rendered["edge/fraud-edge.json"])["signing"]["key"] == "kms://edge-signer"
    assert "kubernetes/fraud-api.yaml" in rendered and not any(
        "fraud-edge" in p for p in rendered if p != "edge/fraud-edge.json"
    )


def test_cli_build_uses_the_feature_services_dtypes_and_then_reuses(
    trained: Trained, cli: Callable[..., CliResult]
) -> None:
    import yaml

    from mlspec.edge import verify_package

    t = trained
    (t.root / "specs" / "training" / f"{MODEL}.yaml").write_text(yaml.safe_dump(t.spec, sort_keys=False))
    (t.root / "specs" / "deployments" / "fraud-box.yaml").write_text(
        EDGE_SPEC.replace("name: fraud-edge,", "name: fraud-box,").replace("name: fraud-detector,", f"name: {MODEL},")
        .replace("{quantize: int8, max_accuracy_drop: 0.02}", "{quantize: none}")
    )  # fmt: skip
    built = cli("edge", "build", "fraud-box", "--env", "local", "-C", str(t.root))
    assert built.code == 0, built.err
    assert f"✓ fraud-box: {MODEL} v1 ->" in built.out and "not quantized" in built.out
    package = t.root / ".mlspec" / "local" / "edge" / "fraud-box" / "v1"
    manifest = verify_package(package, signer_pem(t))
    dtypes = {f["name"]: f["dtype"] for f in manifest.inputs[0]["features"]}
    assert (dtypes["txn_count_7d"], dtypes["merchant_txn_count_30d"], dtypes["txn_amount_sum_7d"]) == (
        "int64",
        "int64",
        "float32",
    )
    again = cli("edge", "build", "fraud-box", "--env", "local", "-C", str(t.root))
    assert again.code == 0 and "reused" in again.out
    assert verify_package(package, signer_pem(t)).sha256 == manifest.sha256

    wrong = cli("edge", "build", "fraud-api", "--env", "local", "-C", str(t.root))
    assert wrong.code == 2 and "is mode: online, not edge" in wrong.err
    assert cli("edge", "build", "fraud-box", "--env", "prod", "-C", str(t.root)).code == 2
    missing = cli("edge", "build", "nope", "--env", "local", "-C", str(t.root))
    assert missing.code == 2 and "no Deployment 'nope'" in missing.err and "Traceback" not in missing.err
