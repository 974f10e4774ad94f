"""JSON Schema export: valid schemas, generated from the validator's own models, and agreeing with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlspec.load import Limits, load_file
from mlspec.spec.registry import ALL_KINDS
from mlspec.spec.schema import combined_schema, kind_schema
from tests.conftest import FIXTURES, MINIMAL, REPO, CliResult, parse

VALIDATOR = jsonschema.Draft202012Validator
SCHEMA = combined_schema()
CHECKER = jsonschema.FormatChecker()

# Fixtures whose problem is structural (types, fields, enums, patterns, ranges): JSON Schema must refuse
# them too. Cross-field rules (weights adding to 100, min <= max, region allowed) and references are
# beyond JSON Schema and are mlspec's alone.
STRUCTURAL = [
    "invalid-classification.yaml", "invalid-cron.yaml", "invalid-duration.yaml", "invalid-gate.yaml",
    "invalid-memory.yaml", "invalid-name.yaml", "invalid-rollout-strategy.yaml", "many-errors-one-file.yaml",
    "missing-kind.yaml", "missing-required-field.yaml", "out-of-range-canary-step.yaml", "secret-value-inline.yaml",
    "unknown-field-metadata.yaml", "unknown-field-nested.yaml", "unknown-field-top.yaml", "unknown-kind.yaml",
    "wrong-api-version.yaml", "wrong-type-quoted-int.yaml", "wrong-type-scalar-for-list.yaml",
    "unknown-gate-metric.yaml",
    "wrong-type-yaml11-bool.yaml", "waiver-bad-date.yaml",
]  # fmt: skip


def documents(path: Path) -> list[Any]:
    docs, diags = load_file(path, str(path), Limits())
    assert diags == []
    return [d.data for d in docs]


def schema_errors(data: Any) -> list[str]:
    return [e.message for e in VALIDATOR(SCHEMA, format_checker=CHECKER).iter_errors(data)]


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_every_kind_schema_is_a_valid_json_schema(kind: str) -> None:
    schema = kind_schema(kind)
    VALIDATOR.check_schema(schema)
    assert schema["additionalProperties"] is False


def test_combined_schema_is_valid_and_dispatches_on_kind() -> None:
    VALIDATOR.check_schema(SCHEMA)
    assert SCHEMA["properties"]["kind"]["enum"] == list(ALL_KINDS)
    bad = json.loads(json.dumps(parse(MINIMAL["Entity"])[0][0].document.data))
    bad["spec"]["join_keys"] = "customer_id"
    assert schema_errors(bad), "the Entity branch must apply when kind is Entity"


def test_reference_platform_is_valid_under_the_schema() -> None:
    files = [
        REPO / "mlspec.yaml",
        *sorted((REPO / "specs").rglob("*.yaml")),
        *sorted((REPO / "environments").glob("*.yaml")),
    ]
    checked = 0
    for path in files:
        for data in documents(path):
            assert schema_errors(data) == [], path
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_minimal_specs_are_valid_under_the_schema(kind: str) -> None:
    (spec,), _ = parse(MINIMAL[kind])
    assert schema_errors(spec.document.data) == []


@pytest.mark.parametrize("name", STRUCTURAL)
def test_schema_and_validator_agree_on_structural_mistakes(name: str) -> None:
    path = FIXTURES / "bad" / name
    docs, load_problems = load_file(path, name, Limits())
    assert load_problems == [] and docs
    assert any(schema_errors(d.data) for d in docs), f"JSON Schema accepts {name}, which mlspec refuses"


def test_cli_writes_one_file_per_kind(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("schema", "-o", str(tmp_path))
    assert result.code == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"{k}.schema.json" for k in ALL_KINDS] + ["mlspec.schema.json"])
    assert json.loads((tmp_path / "Deployment.schema.json").read_text())["title"] == "Deployment"


def test_cli_prints_one_kind_and_refuses_unknown_kinds(cli: Callable[..., CliResult]) -> None:
    result = cli("schema", "--kind", "Waiver")
    assert result.code == 0 and json.loads(result.out)["title"] == "Waiver"
    wrong = cli("schema", "--kind", "Waver")
    assert wrong.code == 2 and "did you mean 'Waiver'?" in wrong.err


def test_committed_schema_folder_is_up_to_date(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    cli("schema", "-o", str(tmp_path))
    for fresh in tmp_path.iterdir():
        committed = REPO / "schema" / fresh.name
        assert committed.read_text() == fresh.read_text(), f"run 'make schema' to refresh {committed.name}"
