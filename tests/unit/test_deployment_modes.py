"""Deployment modes are one model each, chosen by ``mode``; a section of another mode is one located error."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import jsonschema
import pytest

from mlspec.resolve.graph import resolve_environment
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment, EdgeDeploymentSpec, OnlineDeploymentSpec
from mlspec.spec.environment import Environment
from mlspec.spec.schema import kind_schema
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec, is_spec_of, specs_of
from tests.conftest import MINIMAL, parse

HEAD = "apiVersion: mlspec/v1\nkind: Deployment\nmetadata: {name: scores}\nspec:\n  model: {name: fraud-detector}\n"
BATCH = "  batch:\n    entities: customers\n    sink: {path: predictions/scores}\n"
EDGE = "  edge: {quantize: int8}\n"


def only(text: str) -> Any:
    specs, diags = parse(text)
    assert diags == [], [d.message for d in diags]
    return specs[0].model.spec


@pytest.mark.parametrize(
    ("body", "member", "mode"),
    [
        ("", OnlineDeploymentSpec, "online"),  # mode omitted: online
        ("  mode: online\n", OnlineDeploymentSpec, "online"),
        ("  mode: batch\n" + BATCH, BatchDeploymentSpec, "batch"),
        ("  mode: edge\n" + EDGE, EdgeDeploymentSpec, "edge"),
    ],
)
def test_each_mode_is_its_own_model(body: str, member: type, mode: str) -> None:
    spec = only(HEAD + body)
    assert type(spec) is member and spec.mode == mode


def test_only_online_deployments_have_rollouts() -> None:
    assert only(HEAD).rollout.strategy == "direct"
    batch = only(HEAD + "  mode: batch\n" + BATCH)
    assert not hasattr(batch, "rollout") and batch.batch.entities == "customers"


@pytest.mark.parametrize(
    ("body", "line", "column", "path", "message"),
    [
        (
            "  mode: batch\n  rollout: {strategy: canary, steps: [10, 100]}\n" + BATCH,
            7, 12, "spec.rollout", "'rollout' applies to online deployments, not mode: batch",
        ),
        (
            "  mode: edge\n  scaling:\n    min_replicas: 2\n" + EDGE,
            8, 5, "spec.scaling", "'scaling' applies to online deployments, not mode: edge",
        ),
        (BATCH, 7, 5, "spec.batch", "'batch' is set but mode is 'online'; set mode: batch"),
        ("  mode: batch\n" + BATCH + EDGE, 10, 9, "spec.edge", "'edge' is set but mode is 'batch'; set mode: edge"),
    ],
)  # fmt: skip
def test_a_section_of_another_mode_is_one_error_at_the_section(
    body: str, line: int, column: int, path: str, message: str
) -> None:
    _, diags = parse(HEAD + body)
    assert len(diags) == 1, [d.message for d in diags]
    (diag,) = diags
    assert (diag.code, diag.path, diag.location.line, diag.location.column) == ("invalid-value", path, line, column)
    assert diag.message == f"'{path}': {message}"


def test_other_errors_are_still_reported_beside_a_misplaced_section() -> None:
    _, diags = parse(
        HEAD + "  mode: batch\n  auth: {method: mtls}\n  batch:\n    entities: Customers\n    sink: {path: p}\n"
    )
    assert sorted(d.path for d in diags) == ["spec.auth", "spec.batch.entities"]


def test_a_mode_without_its_section_names_the_section() -> None:
    _, diags = parse(HEAD + "  mode: batch\n")
    assert [(d.code, d.path) for d in diags] == [("missing-field", "spec.batch")]
    assert diags[0].message == "missing required field 'batch' in 'spec'"


@pytest.mark.parametrize(("value", "shown"), [("bach", "'bach'"), ("3", "3"), ("Batch", "'Batch'")])
def test_an_unknown_mode_is_located_with_a_suggestion(value: str, shown: str) -> None:
    _, diags = parse(HEAD + f"  mode: {value}\n")
    assert len(diags) == 1
    (diag,) = diags
    assert (diag.code, diag.path, diag.location.line, diag.location.column) == ("invalid-value", "spec.mode", 6, 9)
    assert diag.message == f"'spec.mode' is {shown}; expected one of online, batch, edge"
    if value == "bach":
        assert diag.hint == "did you mean 'batch'?"


def test_a_spec_that_is_not_a_mapping_says_so() -> None:
    _, diags = parse("apiVersion: mlspec/v1\nkind: Deployment\nmetadata: {name: scores}\nspec: 5\n")
    assert [(d.code, d.path) for d in diags] == [("wrong-type", "spec")]


def test_online_fields_are_suggested_within_the_online_model() -> None:
    _, diags = parse(HEAD + "  scalling: {min_replicas: 2}\n")
    assert [(d.code, d.hint) for d in diags] == [("unknown-field", "did you mean 'scaling'?")]


def test_the_schema_offers_one_branch_per_mode_for_editors() -> None:
    schema = kind_schema("Deployment")
    spec = schema["properties"]["spec"]
    assert [branch["$ref"] for branch in spec["oneOf"]] == [
        "#/$defs/OnlineDeploymentSpec", "#/$defs/BatchDeploymentSpec", "#/$defs/EdgeDeploymentSpec",
    ]  # fmt: skip
    assert spec["discriminator"]["propertyName"] == "mode"
    assert set(spec["discriminator"]["mapping"]) == {"online", "batch", "edge"}
    validator = jsonschema.Draft202012Validator(schema)

    def document(body: str) -> Any:
        return json.loads(json.dumps(parse(HEAD + body)[0][0].document.data))

    for body in ("", "  mode: batch\n" + BATCH, "  mode: edge\n" + EDGE):
        assert list(validator.iter_errors(document(body))) == [], body
    document = document("  mode: batch\n" + BATCH)
    document["spec"]["rollout"] = {"strategy": "direct"}
    assert list(validator.iter_errors(document)), "a batch Deployment with a rollout must not validate"
    document["spec"].pop("rollout")
    document["spec"]["mode"] = "bach"
    assert list(validator.iter_errors(document)), "an unknown mode must not validate"


def test_parsed_specs_narrow_by_kind() -> None:
    specs, diags = parse(MINIMAL["Deployment"] + "---\n" + MINIMAL["Environment"])
    assert diags == []
    deployment, environment = specs
    assert is_spec_of(deployment, Deployment) and not is_spec_of(deployment, Environment)
    assert deployment.as_kind(Deployment) is deployment and deployment.as_kind(Environment) is None
    assert specs_of(specs, Environment) == [environment]
    typed: list[ParsedSpec[TrainingPipeline]] = specs_of(specs, TrainingPipeline)
    assert typed == []


def test_the_resolved_graph_finds_resources_by_model() -> None:
    specs, diags = parse(
        textwrap.dedent(MINIMAL["Environment"]).lstrip("\n") + "---\n" + HEAD.replace("scores", "api") + "---\n"
        + HEAD.replace("scores", "nightly") + "  mode: batch\n" + BATCH
    )  # fmt: skip
    assert diags == []
    graph, problems = resolve_environment(specs, "prod")
    assert problems == [] and graph is not None
    assert [s.name for s in graph.specs(Deployment)] == ["api", "nightly"]
    nightly = graph.require(Deployment, "nightly")
    assert isinstance(nightly.model.spec, BatchDeploymentSpec)
    assert graph.find(Deployment, "missing") is None and graph.find(Environment, "api") is None
    assert graph.typed(Deployment, "Deployment/api") is graph.resources["Deployment/api"]
    with pytest.raises(KeyError):
        graph.require(TrainingPipeline, "api")
    assert graph.env is graph.environment.model
