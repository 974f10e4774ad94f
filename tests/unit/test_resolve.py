"""Resolution per environment: merge-patch overrides located in the environment file, references, order, cycles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.app.project import Project
from mlspec.errors import UsageError
from mlspec.resolve.graph import GRAPH_KINDS
from mlspec.resolve.overlay import merge_patch
from mlspec.spec import Deployment
from tests.conftest import REPO, CliResult, minimal_platform, write_files

PROJECT = (
    "apiVersion: mlspec/v1\nkind: Project\nmetadata: {name: demo}\nspec: {specs: [specs], environments: environments}\n"
)


def project(tmp_path: Path, env_extra: str = "", specs: str | None = None) -> Project:
    parts = (specs or minimal_platform()).split("---\n")
    env = next(p for p in parts if "kind: Environment" in p) + env_extra
    others = [p for p in parts if "kind: Environment" not in p]
    files = {"mlspec.yaml": PROJECT, "environments/prod.yaml": env, "specs/all.yaml": "---\n".join(others)}
    write_files(tmp_path, files)
    return Project.open(tmp_path)


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1, "e": {"f": 1}}
    patched = merge_patch(target, {"a": {"b": 2, "c": [3]}, "d": None, "e": 5, "g": {"h": None}})
    assert patched == {"a": {"b": 2, "c": [3]}, "e": 5, "g": {}}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1, "e": {"f": 1}}, "the target is never changed"


def test_override_changes_only_that_environment(tmp_path: Path) -> None:
    extra = "  overrides:\n    - target: Deployment/fraud-api\n      patch: {spec: {scaling: {min_replicas: 3, max_replicas: 9}}}\n"
    resolution = project(tmp_path, extra).resolve("prod")
    assert resolution.ok, resolution.diagnostics
    assert resolution.graph is not None
    deployment = resolution.graph.resources["Deployment/fraud-api"].model
    assert isinstance(deployment, Deployment)
    assert (deployment.spec.scaling.min_replicas, deployment.spec.scaling.max_replicas) == (3, 9)
    assert deployment.spec.rollout.strategy == "canary", "untouched fields keep their value"
    assert resolution.graph.overridden == {"Deployment/fraud-api"}


def test_an_invalid_patch_is_reported_in_the_environment_file(tmp_path: Path) -> None:
    extra = "  overrides:\n    - target: Deployment/fraud-api\n      patch: {spec: {scaling: {min_replicas: 30}}}\n"
    resolution = project(tmp_path, extra).resolve("prod")
    (d,) = resolution.diagnostics
    assert d.location.file.endswith("environments/prod.yaml")
    assert d.path == "spec.scaling.min_replicas" and "above max_replicas" in d.message
    line = (tmp_path / "environments/prod.yaml").read_text().splitlines()[d.location.line - 1]
    assert line[d.location.column - 1 :].startswith("30")


def test_an_unknown_field_in_a_patch_points_at_the_patch(tmp_path: Path) -> None:
    extra = "  overrides:\n    - target: Deployment/fraud-api\n      patch: {spec: {scalling: {min_replicas: 2}}}\n"
    (d,) = project(tmp_path, extra).resolve("prod").diagnostics
    assert d.code == "unknown-field" and d.hint == "did you mean 'scaling'?"
    assert d.location.file.endswith("prod.yaml") and (d.location.line, d.location.column) == (10, 22)


def test_a_patch_may_not_change_identity(tmp_path: Path) -> None:
    extra = "  overrides:\n    - target: Deployment/fraud-api\n      patch: {metadata: {name: other}, kind: Entity}\n"
    diagnostics = project(tmp_path, extra).resolve("prod").diagnostics
    assert sorted(d.code for d in diagnostics) == ["invalid-override", "invalid-override"]
    assert all(d.location.file.endswith("prod.yaml") for d in diagnostics)


def test_a_patch_that_breaks_a_reference_is_caught(tmp_path: Path) -> None:
    extra = "  overrides:\n    - target: FeatureView/stats\n      patch: {spec: {source: nowhere}}\n"
    (d,) = project(tmp_path, extra).resolve("prod").diagnostics
    assert d.code == "unknown-reference" and d.location.file.endswith("prod.yaml")


def test_order_puts_dependencies_first(tmp_path: Path) -> None:
    resolution = project(tmp_path).resolve("prod")
    assert resolution.graph is not None
    order = list(resolution.graph.order)
    for ref, deps in resolution.graph.dependencies.items():
        assert all(order.index(dep) < order.index(ref) for dep in deps)
    assert order[-1] == "Deployment/fraud-api"
    assert resolution.graph.dependencies["Deployment/fraud-api"] == ("TrainingPipeline/fraud-detector",)
    assert resolution.graph.dependents("DataSource/txns") >= {"FeatureView/stats", "Deployment/fraud-api"}


def test_cycles_name_both_ends(tmp_path: Path) -> None:
    kafka = (
        "apiVersion: mlspec/v1\nkind: DataSource\nmetadata: {name: stream-a}\nspec:\n  type: kafka\n"
        "  bootstrap_servers: k:9092\n  topic: a\n  batch_source: stream-b\n  timestamp_field: ts\n"
        "  region: uae-north\n  classification: internal\n"
    )
    specs = (
        minimal_platform()
        + "---\n"
        + kafka
        + "---\n"
        + kafka.replace("stream-a", "X").replace("stream-b", "stream-a").replace("X", "stream-b")
    )
    (d,) = project(tmp_path, specs=specs).resolve("prod").diagnostics
    assert d.code == "dependency-cycle"
    assert "DataSource/stream-a" in d.message and "DataSource/stream-b" in d.message
    assert d.related


def test_unknown_environment_is_a_usage_error_with_suggestion(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no environment named 'prd'") as info:
        project(tmp_path).resolve("prd")
    assert info.value.hint == "did you mean 'prod'?"


def test_reference_platform_resolves_in_every_environment() -> None:
    proj = Project.open(REPO)
    validation = proj.validate()
    names = proj.environments(validation)
    assert names == ["dev", "local", "prod", "staging"]
    for name in names:
        resolution = proj.resolve(name, validation)
        assert resolution.ok, (name, resolution.diagnostics)
        # every spec of a graph kind is in every environment's graph, once
        expected = {(s.kind, s.name) for s in validation.specs if s.kind in GRAPH_KINDS}
        assert resolution.graph is not None and len(resolution.graph.order) == len(expected) == 21
    prod = proj.resolve("prod", validation).graph
    assert prod is not None
    fraud = prod.resources["Deployment/fraud-api"].model
    assert isinstance(fraud, Deployment) and fraud.spec.scaling.min_replicas == 4


@pytest.mark.parametrize(
    ("fmt", "marker"), [("text", "1. DataSource/"), ("mermaid", "flowchart LR"), ("dot", "digraph")]
)
def test_graph_command_formats(fmt: str, marker: str, cli: Callable[..., CliResult]) -> None:
    result = cli("graph", "--env", "prod", "--format", fmt, "-C", str(REPO))
    assert result.code == 0 and marker in result.out
    assert "Deployment/fraud-api" in result.out


def test_graph_command_reports_resolution_problems(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    project(
        tmp_path, "  overrides:\n    - {target: Deployment/fraud-api, patch: {spec: {scaling: {min_replicas: 30}}}}\n"
    )
    result = cli("graph", "--env", "prod", "-C", str(tmp_path))
    assert result.code == 1 and "error[invalid-value]" in result.out and "prod.yaml" in result.out


def test_only_platform_resources_can_be_overridden(tmp_path: Path) -> None:
    extra = "  overrides:\n    - {target: Environment/prod, patch: {spec: {tier: staging}}}\n"
    (d,) = project(tmp_path, extra).resolve("prod").diagnostics
    assert d.code == "invalid-override" and "Environment cannot be overridden" in d.message
