"""Explainability on the real engines: SHAP reports in MLflow and the promotion rule for pii pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlspec.runtime import explain
from mlspec.runtime.context import RuntimeContext
from tests.integration.test_training import load_spec, platform, run_steps

pytestmark = pytest.mark.slow

TXN_FEATURES = ["txn_count_7d", "txn_amount_sum_7d", "txn_amount_avg_7d", "txn_amount_max_7d",
                "foreign_txn_ratio_7d", "night_txn_ratio_7d"]  # fmt: skip
__all__ = ["platform"]  # the module-scoped project fixture, shared with test_training


def test_pii_features_come_from_the_feast_registrys_source_tags(platform: tuple[Path, RuntimeContext]) -> None:
    root, ctx = platform
    assert explain.pii_features(load_spec(root, "fraud-detector"), ctx) == TXN_FEATURES  # merchant-risk: confidential
    churn = explain.pii_features(load_spec(root, "churn-model"), ctx)
    # customer-profile (pii), not app-engagement (internal), and only the two selected customer-txn-stats fields
    assert churn == ["tenure_months", "age", "num_products", "balance_aed", "salary_transfer", "txn_count_7d",
                     "txn_amount_avg_7d"]  # fmt: skip


def test_pii_pipeline_logs_a_shap_report_that_ranks_the_true_drivers(
    platform: tuple[Path, RuntimeContext], tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    root, ctx = platform
    spec = load_spec(root, "fraud-detector")
    spec["metadata"]["name"] = "fraud-explained"
    spec["spec"]["evaluation"]["gates"] = {}
    summary = run_steps(spec, ctx, tmp_path)
    explained = summary["explainability"]
    assert explained["required"] and explained["reasons"] == ["pii features", "evaluation.explainability"]
    assert explained["pii_features"] == TXN_FEATURES and explained["report"] == explain.REPORT
    assert explained["error"] is None and explained["blocked"] is None
    assert summary["version"] == "1" and summary["promoted"]

    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    mlflow.set_tracking_uri(ctx.tracking_uri)
    local = mlflow.artifacts.download_artifacts(run_id=summary["run_id"], artifact_path="explainability",
                                                dst_path=str(tmp_path / "dl"))  # fmt: skip
    report = json.loads((Path(local) / "shap.json").read_text())
    assert (Path(local) / "shap.html").read_text().startswith("<!doctype html>")
    assert report["format"] == explain.FORMAT and report["method"] == "shap.KernelExplainer"
    assert report["features"] == summary["features"] and report["pii_features"] == TXN_FEATURES
    importance = [item["mean_abs_shap"] for item in report["importance"]]
    assert importance == sorted(importance, reverse=True) and len(importance) == len(report["features"])
    rank = {item["feature"]: item["rank"] for item in report["importance"]}
    # the label is drawn from merchant risk (and foreign/night ratios); merchant_txn_count_30d is pure poisson noise
    assert rank["merchant_fraud_rate_30d"] < rank["merchant_txn_count_30d"], report["importance"]
    assert rank["merchant_fraud_rate_30d"] <= 3, report["importance"]
    # per-row values for held-out rows only, and they add up to the model's score (local accuracy)
    rows = report["rows"]
    values = np.array(rows["shap_values"])
    assert values.shape == (report["explained"]["rows"], len(report["features"]))
    assert min(rows["index"]) >= int(client.get_run(summary["run_id"]).data.params["train_rows"])
    np.testing.assert_allclose(values.sum(axis=1) + report["base_value"], rows["prediction"], atol=1e-4)
    assert "data" not in rows  # raw pii values are not copied into the report

    version = client.get_model_version("fraud-explained", "1")
    assert version.tags[explain.TAG] == "shap" and version.tags[explain.REPORT_TAG] == explain.REPORT
    assert client.get_run(summary["run_id"]).data.tags[explain.TAG] == "shap"
    assert str(client.get_model_version_by_alias("fraud-explained", "champion").version) == "1"


def test_pii_pipeline_without_a_report_is_registered_but_not_promoted(
    platform: tuple[Path, RuntimeContext], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    def broken(*_: object, **__: object) -> dict[str, object]:
        raise RuntimeError("shap blew up")

    root, ctx = platform
    spec = load_spec(root, "fraud-detector")
    spec["metadata"]["name"] = "fraud-unexplained"
    spec["spec"]["evaluation"]["gates"] = {}
    spec["spec"]["evaluation"]["explainability"] = False  # pii alone requires the report
    monkeypatch.setattr(explain, "attributions", broken)
    summary = run_steps(spec, ctx, tmp_path, epochs=2)
    explained = summary["explainability"]
    assert explained["required"] and explained["reasons"] == ["pii features"] and explained["report"] is None
    assert summary["version"] == "1" and summary["beats_champion"] and not summary["promoted"]
    assert explained["blocked"].startswith("explainability: fraud-unexplained v1 may not take 'champion'")
    assert (
        "uses pii features (txn_count_7d" in explained["blocked"]
        and "RuntimeError: shap blew up" in explained["blocked"]
    )

    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    assert str(client.get_model_version_by_alias("fraud-unexplained", "challenger").version) == "1"
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("fraud-unexplained", "champion")
    assert explain.TAG not in client.get_model_version("fraud-unexplained", "1").tags
    assert "shap blew up" in client.get_run(summary["run_id"]).data.tags["mlspec.explainability_error"]
