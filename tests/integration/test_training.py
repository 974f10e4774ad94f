"""The training runtime against real Feast, torch, ONNX Runtime, MLflow and the KFP local runner (no mocks)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlspec.app.project import Project
from mlspec.render.write import write_tree
from mlspec.runtime import steps
from mlspec.runtime.context import RuntimeContext
from tests.conftest import REPO, copy_platform

sys.path.insert(0, str(REPO / "scripts"))
from generate_data import generate

FEAST = str(Path(sys.executable).parent / "feast")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RuntimeContext]:
    root = copy_platform(tmp_path_factory.mktemp("training"))
    generate(root / "data", customers=400, days=30)
    _, result = Project.open(root).render("local", ["feast", "kfp", "mlflow"], use_cache=False)
    assert result is not None and result.ok, result and result.diagnostics
    write_tree(root / "rendered" / "local", result.artifacts)
    repo = root / "rendered" / "local" / "feast"
    (root / ".mlspec" / "local" / "feast").mkdir(parents=True)
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(root)}
    apply = subprocess.run(
        [FEAST, "apply"], cwd=repo, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert apply.returncode == 0, apply.stderr[-2000:]
    return root, RuntimeContext.local("local", root, root / ".mlspec" / "local", repo)


def load_spec(root: Path, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((root / "specs" / "training" / f"{name}.yaml").read_text())
    return spec


def run_steps(
    spec: dict[str, Any], ctx: RuntimeContext, work: Path, *, promote_directly: bool = True, **hyper: Any
) -> dict[str, Any]:
    """The five steps in order, as the pipeline runs them; returns the summary plus the step outputs."""
    work.mkdir(parents=True, exist_ok=True)
    text, env = json.dumps(spec), ctx.to_json()
    h = {**spec["spec"].get("hyperparameters", {}), **hyper}
    fraction = spec["spec"].get("evaluation", {}).get("test_fraction", 0.2)
    gates = json.dumps(spec["spec"].get("evaluation", {}).get("gates", {}))
    paths = {k: str(work / v) for k, v in
             {"ds": "ds.parquet", "model": "model.pt", "eval": "eval.json", "onnx": "model.onnx"}.items()}  # fmt: skip
    rows = steps.fetch_features(text, env, paths["ds"])
    device = steps.train(text, env, paths["ds"], paths["model"], h.get("epochs", 10), h.get("learning_rate", 0.001),
                         h.get("batch_size", 256), fraction)  # fmt: skip
    metrics, passed = steps.evaluate(text, env, gates, paths["ds"], paths["model"], paths["eval"])
    sha = steps.export_onnx(text, env, paths["ds"], paths["model"], paths["onnx"])
    summary = json.loads(steps.register(text, env, spec["metadata"]["name"], "challenger", promote_directly,
                                        paths["ds"], paths["model"], paths["eval"], paths["onnx"]))  # fmt: skip
    return {**summary, "_rows": rows, "_device": device, "_metrics": metrics, "_passed": passed, "_sha": sha,
            "_paths": paths}  # fmt: skip


def test_fetch_features_is_a_point_in_time_join_that_keeps_every_label_row(
    platform: tuple[Path, RuntimeContext], tmp_path: Path
) -> None:
    root, ctx = platform
    spec = load_spec(root, "fraud-detector")
    out = tmp_path / "ds.parquet"
    rows = steps.fetch_features(json.dumps(spec), ctx.to_json(), str(out))
    labels = pd.read_parquet(root / "data" / "fraud_labels.parquet")
    # the labels repeat (customer, day) with different merchants: Feast's file store would merge them (feast#6787)
    assert labels.duplicated(["customer_id", "event_ts"]).sum() > 10
    assert rows == len(labels)
    from mlspec.runtime.dataset import read_dataset

    frame, features, label = read_dataset(str(out))
    assert label == "is_fraud" and len(frame) == len(labels)
    assert features == ["txn_count_7d", "txn_amount_sum_7d", "txn_amount_avg_7d", "txn_amount_max_7d",
                        "foreign_txn_ratio_7d", "night_txn_ratio_7d", "merchant_fraud_rate_30d",
                        "merchant_txn_count_30d"]  # fmt: skip
    assert frame["event_timestamp"].is_monotonic_increasing
    assert sorted(frame["is_fraud"]) == sorted(labels["is_fraud"])
    txns = pd.read_parquet(root / "data" / "customer_transactions.parquet")
    merchants = pd.read_parquet(root / "data" / "merchant_risk.parquet")
    for row in frame.sample(60, random_state=1).itertuples():
        known = txns[(txns.customer_id == row.customer_id) & (txns.event_ts <= row.event_timestamp)]
        assert row.txn_count_7d == known.sort_values("event_ts").iloc[-1].txn_count_7d
        risk = merchants[(merchants.merchant_id == row.merchant_id) & (merchants.event_ts <= row.event_timestamp)]
        expected = risk.sort_values("event_ts").iloc[-1].merchant_fraud_rate_30d
        assert row.merchant_fraud_rate_30d == pytest.approx(expected)


def test_training_is_deterministic_learns_exports_and_registers(
    platform: tuple[Path, RuntimeContext], tmp_path: Path
) -> None:
    import onnxruntime as ort
    import torch
    from mlflow import MlflowClient

    from mlspec.runtime.model import load, predict

    root, ctx = platform
    spec = load_spec(root, "fraud-detector")
    spec["spec"]["evaluation"]["gates"] = {"auc": ">= 0.7"}
    first = run_steps(spec, ctx, tmp_path / "a")
    assert first["_device"] == "cpu" and first["device"] == "cpu"  # a GPU spec with fallback: cpu, no GPU here
    assert first["metrics"]["auc"] > 0.75, first["metrics"]
    assert first["gates_passed"] and first["version"] == "1"
    assert first["promoted"] and first["champion"] is None and first["beats_champion"]
    # deterministic: the same data and seed give the same weights
    again = tmp_path / "again.pt"
    h = spec["spec"]["hyperparameters"]
    steps.train(json.dumps(spec), ctx.to_json(), first["_paths"]["ds"], str(again), h["epochs"], h["learning_rate"],
                h["batch_size"], 0.2)  # fmt: skip
    one = torch.load(first["_paths"]["model"], weights_only=False)["state_dict"]
    two = torch.load(again, weights_only=False)["state_dict"]
    assert all(torch.equal(one[k], two[k]) for k in one)

    # ONNX: raw features in, probabilities out, same as torch on the test rows, any batch size
    assert first["onnx_sha256"] == first["_sha"] and Path(first["onnx_path"]).is_file()
    session = ort.InferenceSession(first["onnx_path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_outputs()[0].name == "score"
    assert session.get_inputs()[0].shape[0] == "batch"
    from mlspec.runtime.dataset import read_dataset

    frame, features, _ = read_dataset(first["_paths"]["ds"])
    x = frame[features].to_numpy(np.float32)[-400:]
    model, _ = load(first["_paths"]["model"], spec, ctx)
    (scores,) = session.run(["score"], {"input": x})
    assert np.max(np.abs(scores - predict(model, x))) <= 1e-4 and ((scores >= 0) & (scores <= 1)).all()

    # MLflow really holds the run, the version, its tags and the aliases
    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    run = client.get_run(first["run_id"])
    assert run.data.metrics["auc"] == pytest.approx(first["metrics"]["auc"])
    assert run.data.tags["team"] == "payments-ml" and run.data.tags["mlspec.device"] == "cpu"
    assert run.data.params["epochs"] == "20" and json.loads(run.data.params["features"]) == features
    version = client.get_model_version("fraud-detector", "1")
    assert version.tags["onnx_sha256"] == first["onnx_sha256"] and json.loads(version.tags["features"]) == features
    assert version.tags["device"] == "cpu"
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("fraud-detector", "challenger").version) == "1"
    reference = pd.read_parquet(first["reference_data"])
    assert list(reference.columns) == features and len(reference) == int(run.data.params["train_rows"])
    assert len(reference) == len(frame) - int(np.ceil(len(frame) * 0.2))  # the training split, not the test rows

    # a worse model becomes the challenger but does not take the champion alias
    spec["spec"]["evaluation"]["gates"] = {}  # no gate: the champion comparison alone decides
    worse = run_steps(spec, ctx, tmp_path / "b", epochs=1, learning_rate=0.00001)
    assert worse["version"] == "2" and worse["metrics"]["auc"] < first["metrics"]["auc"]
    assert worse["champion"] == {"version": "1", "metric": "auc", "value": pytest.approx(first["metrics"]["auc"])}
    assert not worse["beats_champion"] and not worse["promoted"]
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("fraud-detector", "challenger").version) == "2"
    # ...and is marked worse, so a canary or blue-green never rolls it out; a shadow may still compare it
    assert client.get_model_version("fraud-detector", "1").tags["mlspec.quality"] == "better"
    tags = client.get_model_version("fraud-detector", "2").tags
    assert tags["mlspec.quality"] == "worse" and tags["mlspec.quality_detail"].startswith("auc 0.")
    from mlspec.spec.deployment import Deployment
    from mlspec.targets.local.paths import LocalPaths
    from mlspec.targets.local.registry import Registry
    from mlspec.targets.local.serving import ServingEngine

    engine = ServingEngine(LocalPaths("local", root, root / ".mlspec" / "local"), Registry(ctx.tracking_uri))

    def deployment(rollout: dict[str, Any]) -> Deployment:
        doc = {"apiVersion": "mlspec/v1", "kind": "Deployment", "metadata": {"name": "fraud-api"},
               "spec": {"model": {"name": "fraud-detector", "alias": "champion"}, "rollout": rollout}}  # fmt: skip
        return Deployment.model_validate(doc)

    canary = deployment({"strategy": "canary", "steps": [10, 100]})
    assert [v["version"] for v in engine.variants(canary, {})] == ["1"]
    assert "fraud-detector v2 is not rolled out: worse than the champion offline (auc" in engine.held_back(canary)
    shadow = deployment({"strategy": "shadow", "challenger": "challenger"})
    assert [v["version"] for v in engine.variants(shadow, {})] == ["1", "2"] and engine.held_back(shadow) == ""


def test_failing_gate_is_logged_and_registers_nothing(platform: tuple[Path, RuntimeContext], tmp_path: Path) -> None:
    from mlflow import MlflowClient

    root, ctx = platform
    spec = load_spec(root, "fraud-detector")
    spec["metadata"]["name"] = "fraud-gated"
    spec["spec"]["evaluation"]["gates"] = {"auc": ">= 0.999"}
    summary = run_steps(spec, ctx, tmp_path)
    (gate,) = summary["gates"]
    assert not summary["gates_passed"] and not gate["passed"]
    assert gate["message"].startswith("auc 0.") and "< 0.999 (short by 0." in gate["message"]
    assert summary["version"] is None and not summary["promoted"]
    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    assert "short by" in client.get_run(summary["run_id"]).data.tags["mlspec.gate_failures"]
    assert client.search_model_versions("name='fraud-gated'") == []


def test_search_runs_the_specs_trials_and_a_custom_model(platform: tuple[Path, RuntimeContext], tmp_path: Path) -> None:
    from mlflow import MlflowClient

    root, ctx = platform
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "tiny.py").write_text(
        "import torch\n\n"
        "def build(input_dim, output_dim, width=8, dropout=0.0):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(input_dim, width), torch.nn.ReLU(),\n"
        "                               torch.nn.Dropout(dropout), torch.nn.Linear(width, output_dim))\n"
    )
    spec = load_spec(root, "churn-model")
    spec["spec"]["model"]["architecture"] = {
        "type": "custom",
        "entrypoint": "models.tiny:build",
        "params": {"width": 12},
    }
    spec["spec"]["search"] = {"method": "random", "trials": 3, "metric": "auc", "direction": "maximize",
                              "space": {"learning_rate": {"low": 0.001, "high": 0.01, "log": True},
                                        "dropout": {"choices": [0.0, 0.2]}}}  # fmt: skip
    spec["spec"]["evaluation"]["gates"] = {}
    summary = run_steps(spec, ctx, tmp_path)
    assert summary["search"]["trials"] == 3 and set(summary["search"]["best_params"]) == {"learning_rate", "dropout"}
    assert summary["metrics"]["auc"] > 0.6 and summary["version"] == "1"
    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    run = client.get_run(summary["run_id"])
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    assert len(children) == 3
    grid = copy.deepcopy(spec)
    grid["spec"]["search"]["method"] = "grid"
    with pytest.raises(ValueError, match="grid search needs every dimension as choices"):
        steps.train(json.dumps(grid), ctx.to_json(), summary["_paths"]["ds"], str(tmp_path / "g.pt"), 2, 0.01, 64, 0.2)


def test_compiled_pipeline_runs_end_to_end_on_the_kfp_local_runner(
    platform: tuple[Path, RuntimeContext], tmp_path: Path
) -> None:
    from mlspec.runtime.local_run import PipelineRunError, run_pipeline

    root, ctx = platform
    pipeline = root / "rendered" / "local" / "kfp" / "churn-model.yaml"
    summary = run_pipeline(pipeline, {"environment": ctx.to_json()}, tmp_path / "kfp")
    assert summary["model_name"] == "churn-model" and summary["gates_passed"]
    assert summary["search"]["trials"] == 2  # the local environment's override of the spec's 8
    assert Path(summary["onnx_path"]).is_file() and Path(summary["reference_data"]).is_file()
    assert summary["version"] is not None and summary["device"] == "cpu"
    with pytest.raises(PipelineRunError) as failure:
        run_pipeline(pipeline, {"environment": "local"}, tmp_path / "kfp-bad")
    assert failure.value.step == "fetch-features"
    assert "must be a RuntimeContext as JSON" in str(failure.value)
