"""`mlspec check --format sarif` is accepted by GitHub code scanning: Microsoft's validator finds no error or warning.

Rules carry descriptions and help, results carry fingerprints that survive line moves, and a finding
that holds in several environments is one result that lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlspec.views.sarif_rules import DIAGNOSTIC_RULES, POLICY_RULES
from tests import sarif_multitool
from tests.conftest import FIXTURES, REPO, CliResult, copy_platform

SCHEMA = json.loads((FIXTURES / "schemas" / "sarif" / "sarif-schema-2.1.0.json").read_text())
FOREIGN_PII = ("specs/sources/payments.yaml", "region: uae-north\n  classification: pii")


@pytest.fixture(scope="session")
def multitool() -> Path:
    """The SARIF multitool's binary (npm-installed into .cache/ on the first run)."""
    return sarif_multitool.install()


def sarif(cli: Callable[..., CliResult], root: Path, out: Path, *envs: str) -> dict[str, Any]:
    """Check ``root`` from its own folder (as CI does from the checkout) into ``out``; the parsed log."""
    args = [arg for env in envs for arg in ("--env", env)]
    cli("check", "--format", "sarif", "-o", str(out), *args, cwd=root)
    log: dict[str, Any] = json.loads(out.read_text())
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    return log


@pytest.fixture
def foreign_pii(tmp_path: Path) -> Path:
    """The reference platform with its pii payments source moved outside the UAE: denied in every environment."""
    (tmp_path / "platform").mkdir()
    root = copy_platform(tmp_path / "platform")
    path, text = FOREIGN_PII
    spec = root / path
    assert text in spec.read_text()
    spec.write_text(spec.read_text().replace(text, "region: eu-west\n  classification: pii"))
    return root


def results_of(log: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [r for r in log["runs"][0]["results"] if r["ruleId"] == rule]


def test_the_reference_platforms_sarif_passes_the_validator(
    multitool: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    out = tmp_path / "check.sarif"
    log = sarif(cli, REPO, out)
    assert log["runs"][0]["results"] == []
    assert sarif_multitool.validate(multitool, out) == []


def test_a_finding_in_several_environments_is_one_result_and_passes_the_validator(
    multitool: Path, cli: Callable[..., CliResult], foreign_pii: Path, tmp_path: Path
) -> None:
    out = tmp_path / "check.sarif"
    log = sarif(cli, foreign_pii, out)
    assert sarif_multitool.validate(multitool, out) == []

    (region,) = results_of(log, "residency.region")
    assert {"dev", "staging", "prod"} <= set(region["properties"]["environments"])
    assert all(env in region["message"]["text"] for env in ("dev", "staging", "prod"))
    assert region["properties"]["resource"] == "DataSource/customer-transactions"
    assert region["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "specs/sources/payments.yaml"
    results = log["runs"][0]["results"]
    places = [(r["ruleId"], r["properties"]["resource"], json.dumps(r["locations"])) for r in results]
    assert len(places) == len(set(places)), "one result per finding and place, not one per environment"
    fingerprints = [r["partialFingerprints"]["mlspecFinding/v1"] for r in results]
    assert len(fingerprints) == len(set(fingerprints))

    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} == {r["ruleId"] for r in results}
    for rule in rules:
        assert rule["fullDescription"]["text"] and rule["help"]["text"] and "How to fix" in rule["help"]["markdown"]
    region_rule = next(r for r in rules if r["id"] == "residency.region")
    assert region_rule["defaultConfiguration"] == {"level": "error"}
    assert POLICY_RULES["residency.region"].fix in region_rule["help"]["text"]


def test_fingerprints_survive_moved_lines_and_fewer_environments(
    cli: Callable[..., CliResult], foreign_pii: Path, tmp_path: Path
) -> None:
    def region_result(log: dict[str, Any]) -> dict[str, Any]:
        (result,) = results_of(log, "residency.region")
        return result

    before = region_result(sarif(cli, foreign_pii, tmp_path / "before.sarif"))
    spec = foreign_pii / FOREIGN_PII[0]
    spec.write_text("# moved down\n# by three\n# lines\n" + spec.read_text())
    after = region_result(sarif(cli, foreign_pii, tmp_path / "after.sarif"))
    dev_only = region_result(sarif(cli, foreign_pii, tmp_path / "dev.sarif", "dev"))

    line = before["locations"][0]["physicalLocation"]["region"]["startLine"]
    assert after["locations"][0]["physicalLocation"]["region"]["startLine"] == line + 3
    assert dev_only["properties"]["environments"] == ["dev"]
    assert before["partialFingerprints"] == after["partialFingerprints"] == dev_only["partialFingerprints"]


def test_spec_problems_are_rules_with_help_too(
    multitool: Path, cli: Callable[..., CliResult], foreign_pii: Path, tmp_path: Path
) -> None:
    spec = foreign_pii / "specs" / "entities.yaml"
    spec.write_text(spec.read_text().replace("kind: Entity", "kind: Entitty", 1) + "\n---\nkind: [\n")
    out = tmp_path / "check.sarif"
    log = sarif(cli, foreign_pii, out)
    codes = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert {"unknown-kind", "yaml-syntax"} <= set(codes)
    assert codes["unknown-kind"]["help"]["text"].startswith(DIAGNOSTIC_RULES["unknown-kind"].checks)
    assert sarif_multitool.validate(multitool, out) == []


def test_the_validator_catches_what_code_scanning_rejects(multitool: Path, tmp_path: Path) -> None:
    """The harness is not vacuous: a rule without a full description or help is an error."""
    bare = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "x", "rules": [{"id": "x.rule", "shortDescription": {"text": "x"}}]}},
                "results": [],
            }
        ],
    }
    path = tmp_path / "bare.sarif"
    path.write_text(json.dumps(bare))
    problems = sarif_multitool.validate(multitool, path)
    assert any(p.startswith("GH2012 error") for p in problems), problems


def documented(doc: str, heading: str) -> set[str]:
    """The ids in the first column of the tables under ``heading`` (or in the whole file when empty)."""
    text = (REPO / "docs" / doc).read_text()
    if heading:
        text = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_.-]+)` \|", text, flags=re.MULTILINE))


def test_every_documented_code_and_policy_has_rule_help() -> None:
    assert documented("errors.md", "") - set(DIAGNOSTIC_RULES) == set()
    library = documented("policies.md", "## The built-in library")
    assert len(library) >= 15
    own = {"waiver.expired", "waiver.expiring", "waiver.unused", "policy.error", "policy.malformed"}
    assert (library | own) - set(POLICY_RULES) == set()
