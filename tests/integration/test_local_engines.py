"""The local platform's guard rails, fast: missing data, artifacts-only applies, commands on non-local environments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import CliResult, copy_platform


def test_missing_data_fails_the_pipelines_with_the_source_locations(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = copy_platform(tmp_path)
    result = cli("apply", "--env", "local", "--auto-approve", "-C", str(root))
    assert result.code == 1
    assert "specs/sources/payments.yaml" in result.out
    assert "DataSource fraud-labels: data/fraud_labels.parquet does not exist" in result.out
    assert "scripts/generate_data.py" in result.out
    assert "Deployment/fraud-api: skipped" in result.out
    assert not (root / ".mlspec/local/feast/registry.db").exists()  # Feast never ran on missing data


def test_artifacts_only_writes_and_records_but_runs_no_engine(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = copy_platform(tmp_path)
    result = cli("apply", "--env", "local", "--auto-approve", "--artifacts-only", "-C", str(root))
    assert result.code == 0, result.out
    assert (root / ".mlspec/local/output/kfp/fraud-detector.yaml").is_file()
    assert not (root / ".mlspec/local/feast").exists() and not (root / ".mlspec/local/serving").exists()
    plan = cli("plan", "--env", "local", "-C", str(root))
    assert "No changes" in plan.out


def test_platform_commands_refuse_environments_that_run_on_a_cluster(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = copy_platform(tmp_path)
    for command in ("status", "monitor"):
        result = cli(command, "--env", "prod", "-C", str(root))
        assert result.code == 1
        assert "'prod' is not a local environment" in result.err


def test_plan_says_what_the_engines_will_do(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = copy_platform(tmp_path)
    result = cli("plan", "--env", "local", "-C", str(root))
    assert result.code == 0
    assert "On this machine, applying will also:" in result.out
    assert "TrainingPipeline/fraud-detector: run kfp/fraud-detector.yaml with the KFP local runner" in result.out
    assert "Deployment/fraud-api: serve fraud-detector@champion with onnxruntime (canary rollout)" in result.out
    prod = cli("plan", "--env", "prod", "-C", str(root))
    assert "On this machine" not in prod.out  # prod hands its artifacts to GitOps


def test_a_pii_model_without_its_attribution_report_never_serves(tmp_path: Path) -> None:
    """The engine's judgement of a run, on a real MLflow registry: blocked means no champion and no canary."""
    import pytest
    from mlflow import MlflowClient

    from mlspec.app.project import Project
    from mlspec.spec.training import TrainingPipeline
    from mlspec.targets.base import TargetError
    from mlspec.targets.local.paths import LocalPaths
    from mlspec.targets.local.registry import Registry
    from mlspec.targets.local.training import TrainingEngine

    root = copy_platform(tmp_path)
    pipeline = Project.open(root).validate().specs
    fraud = next(s.model for s in pipeline if s.ref == "TrainingPipeline/fraud-detector")
    assert isinstance(fraud, TrainingPipeline)
    paths = LocalPaths("local", root, root / ".mlspec/local")
    paths.mlflow.mkdir(parents=True)
    uri = paths.runtime_context().tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("fraud-detector")
    version = client.create_model_version("fraud-detector", source=(tmp_path / "m").as_uri()).version
    client.set_registered_model_alias("fraud-detector", "challenger", version)
    summary = {"gates_passed": True, "version": str(version), "explainability": {"blocked": "no report for pii"}}
    with pytest.raises(TargetError, match="no report for pii"):
        TrainingEngine(paths, Registry(uri)).settle(fraud, summary)
    aliases = client.get_registered_model("fraud-detector").aliases
    assert "champion" not in aliases and "challenger" not in aliases
    # the same run with its report: the first good model becomes the champion
    client.set_registered_model_alias("fraud-detector", "challenger", version)
    settled = TrainingEngine(paths, Registry(uri)).settle(fraud, {"gates_passed": True, "version": str(version)})
    assert settled["promoted"] is True
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == str(version)
