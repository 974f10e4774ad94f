"""The local platform's guard rails, fast: missing data, artifacts-only applies, commands on non-local environments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, copy_platform


def test_missing_data_fails_the_pipelines_with_the_source_locations(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = copy_platform(tmp_path)
    result = cli("apply", "--env", "local", "--auto-approve", "-C", str(root))
    assert result.code == 1
    assert "specs/sources/payments.yaml" in result.out
    assert "DataSource fraud-labels: data/fraud_labels.parquet does not exist" in result.out
    # the hint names what the user's project has: the declared columns, never this repository's own script
    assert (
        "a parquet file with columns: customer_id int64, merchant_id int64, event_ts unix_timestamp, "
        "is_fraud int64; event time event_ts" in result.out
    )
    assert "scripts/generate_data.py" not in result.out
    assert "each DataSource's 'schema' declares what it expects" in result.out
    assert "Deployment/fraud-api: skipped" in result.out
    assert not (root / ".mlspec/local/feast/registry.db").exists()  # Feast never ran on missing data


def test_missing_data_hint_names_the_projects_own_sample_script(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = tmp_path / "bank-ml"
    assert cli("init", str(root)).code == 0
    result = cli("apply", "--env", "local", "--auto-approve", "-C", str(root))
    assert result.code == 1
    assert (
        "specs/data.yaml:9:9: DataSource customer-activity: data/customer_activity.parquet does not exist" in result.out
    )
    assert "or write a sample with: python scripts/sample_data.py" in result.out


def test_data_without_a_declared_column_fails_before_feast_at_the_schema(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    pytest.importorskip("pyarrow")
    from mlspec.scaffold.sample import describe_sources, project_specs, write_sample

    root = tmp_path / "bank-ml"
    assert cli("init", str(root)).code == 0
    for source in describe_sources(project_specs(root)):
        if source.name == "customer-activity":  # the data calls the column 'sessions', the schema 'sessions_30d'
            source.columns = [("sessions", *c[1:]) if c[0] == "sessions_30d" else c for c in source.columns]
        write_sample(root, source, dt.date(2026, 1, 31))
    result = cli("apply", "--env", "local", "--auto-approve", "-C", str(root))
    assert result.code == 1
    assert (
        "specs/data.yaml:18:14: column 'sessions_30d' of DataSource customer-activity is not in "
        "data/customer_activity.parquet (did you mean 'sessions'?): fix the schema or the file" in result.out
    )
    assert "KeyError" not in result.out
    assert not (root / ".mlspec/local/feast/registry.db").exists()


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
    result = cli("status", "--env", "prod", "-C", str(root))
    assert result.code == 1
    assert "'prod' is not a local environment" in result.err
    # monitor on a cluster environment reads its rollout controllers' decisions from the cluster instead
    result = cli("monitor", "--env", "prod", "-C", str(root))
    assert result.code == 1 and "cannot read InferenceService ml-prod/fraud-api from the cluster" in result.err


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
