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
