"""Policy results are kept per exact input: an unchanged environment is not evaluated again, locations follow
the live files, and any change to a spec or a policy is evaluated afresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlspec.policy.evaluate as evaluate
from mlspec.app.project import Project
from tests.integration.test_plan_policy import edit, reference_copy


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The environments the policy engine really evaluated (cache misses)."""
    seen: list[str] = []
    real = evaluate._isolated

    def counted(work: Any, timeout: float, graph: Any) -> Any:
        seen.append(graph.name)
        return real(work, timeout, graph)

    monkeypatch.setattr(evaluate, "_isolated", counted)
    return seen


def region_finding(root: Path) -> tuple[str, int, str]:
    findings = Project.open(root).check(["dev"]).findings
    (found,) = [f for f in findings if f.policy == "residency.region"]
    return found.location.file, found.location.line, found.message


def test_an_unchanged_environment_is_not_evaluated_again_and_locations_follow_the_files(
    tmp_path: Path, runs: list[str]
) -> None:
    root = reference_copy(tmp_path / "repo")
    edit(root, "specs/sources/payments.yaml", "region: uae-north\n  classification: pii",
         "region: eu-west\n  classification: pii")  # fmt: skip
    file, line, message = region_finding(root)
    assert runs == ["dev"]
    assert region_finding(root) == (file, line, message) and runs == ["dev"], "kept: not evaluated again"
    # the same content two lines lower: the results are kept, the location is the live one
    payments = root / "specs" / "sources" / "payments.yaml"
    payments.write_text("# moved down\n# by two lines\n" + payments.read_text())
    assert region_finding(root) == (file, line + 2, message) and runs == ["dev"]


def test_a_changed_spec_or_policy_is_evaluated_afresh(tmp_path: Path, runs: list[str]) -> None:
    root = reference_copy(tmp_path / "repo")
    assert not [f for f in Project.open(root).check(["dev"]).findings if f.blocking]
    edit(root, "specs/sources/payments.yaml", "region: uae-north\n  classification: pii",
         "region: eu-west\n  classification: pii")  # fmt: skip
    assert any(f.policy == "residency.region" for f in Project.open(root).check(["dev"]).findings)
    assert runs == ["dev", "dev"]
    policy = root / "policies" / "bank.rego"
    policy.write_text(policy.read_text() + "\n# a comment is a change of the policy text too\n")
    assert any(f.policy == "residency.region" for f in Project.open(root).check(["dev"]).findings)
    assert runs == ["dev", "dev", "dev"]
