"""The plan shows policy: denies, warnings and waivers beside the changes, the verdict in the exit code, the
findings in the saved plan; one apply computes each stage once; a refusal carries its findings as data;
commands use the project's default_environment."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlspec.app.options import ApplyOptions
from mlspec.app.project import Project
from mlspec.errors import PlanRefused
from mlspec.plan.model import Plan
from tests.conftest import REPO, CliResult, approve_waivers, copy_platform

EXPIRED_WAIVER = """apiVersion: mlspec/v1
kind: Waiver
metadata: {name: eu-ledger, owner: ciso-office}
spec:
  policy: residency.region
  resources: [DataSource/customer-transactions]
  reason: "ledger copy in eu-west during the migration ML-77"
  approved_by: ciso
  expires: 2020-01-31
"""


def edit(root: Path, path: str, old: str, new: str) -> None:
    target = root / path
    text = target.read_text()
    assert old in text, (path, old)
    target.write_text(text.replace(old, new))


def reference_copy(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    copy_platform(root)
    shutil.copytree(REPO / "policies", root / "policies")
    return root


@pytest.fixture
def foreign_pii(tmp_path: Path) -> Path:
    """The reference platform with its pii ledger moved to eu-west and an expired waiver for it."""
    root = reference_copy(tmp_path / "repo")
    edit(root, "specs/sources/payments.yaml", "region: uae-north\n  classification: pii",
         "region: eu-west\n  classification: pii")  # fmt: skip
    (root / "specs" / "waivers.yaml").write_text(EXPIRED_WAIVER)
    return root


def test_plan_shows_the_residency_denies_and_the_expired_waiver_and_exits_1(
    foreign_pii: Path, cli: Callable[..., CliResult]
) -> None:
    result = cli("plan", "--env", "dev", "-C", str(foreign_pii))
    assert result.code == 1, result.out + result.err
    out = result.out
    assert "deny[residency.region]" in out and "DataSource/customer-transactions" in out
    assert "deny[residency.derived]" in out
    assert "deny[waiver.expired]" in out and "waiver 'eu-ledger'" in out and "expired on 2020-01-31" in out
    assert "apply would refuse this plan" in out
    # the finding about a created resource stands beside that change, under its line
    lines = out.splitlines()
    change = lines.index(next(line for line in lines if line.strip() == "+ DataSource/customer-transactions"))
    following = lines[change + 1 : change + 30]
    assert any("deny[residency.region]" in line for line in following[: next(
        (i for i, line in enumerate(following) if line.startswith("  + ")), len(following))])  # fmt: skip


def test_plan_json_and_markdown_carry_the_findings(foreign_pii: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("plan", "--env", "dev", "--format", "json", "-C", str(foreign_pii))
    assert result.code == 1
    data = json.loads(result.out)
    assert data["schema_version"] == 2
    by_policy = {(f["policy"], f["resource"]): f for f in data["findings"]}
    region = by_policy[("residency.region", "DataSource/customer-transactions")]
    assert region["severity"] == "deny" and region["status"] == "failed" and region["environment"] == "dev"
    assert region["location"]["file"].endswith("payments.yaml") and region["location"]["line"] > 0
    assert by_policy[("waiver.expired", "Waiver/eu-ledger")]["severity"] == "deny"
    markdown = cli("plan", "--env", "dev", "--format", "markdown", "-C", str(foreign_pii))
    assert markdown.code == 1
    assert "apply would refuse this plan" in markdown.out and "`waiver.expired`" in markdown.out
    assert "`residency.region`" in markdown.out


def test_a_saved_plan_records_its_findings(foreign_pii: Path, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = cli("plan", "--env", "dev", "--out", str(out), "-C", str(foreign_pii), "--format", "json")
    assert result.code == 1 and out.is_file()
    plan = Plan.from_dict(json.loads(out.read_text()))
    assert {(f.policy, f.resource) for f in plan.blocking} >= {
        ("residency.region", "DataSource/customer-transactions"),
        ("waiver.expired", "Waiver/eu-ledger"),
    }
    fresh = Project.open(foreign_pii).plan("dev")
    assert fresh.plan is not None and plan.findings == fresh.plan.findings == fresh.findings


def test_a_version_1_plan_file_still_reads_and_an_unknown_version_says_why(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = reference_copy(tmp_path / "repo")
    result = Project.open(root).plan("dev")
    assert result.plan is not None and not result.refused
    old = Plan(**{**{k: getattr(result.plan, k) for k in (
        "environment", "project", "revision", "state_serial", "desired_hash", "changes")}, "schema_version": 1})  # fmt: skip
    document = old.to_dict()
    assert "findings" not in document
    read = Plan.from_dict(json.loads(json.dumps(document)))
    assert read.schema_version == 1 and read.findings == () and read.plan_hash == old.plan_hash
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**document, "schema_version": 99}))
    refused = cli("apply", str(future), "-C", str(root))
    assert refused.code == 2 and "schema_version 99" in refused.err and "make the plan again" in refused.err


def test_the_comment_and_the_plan_agree(foreign_pii: Path, cli: Callable[..., CliResult]) -> None:
    from mlspec.gitops.changes import branch_report

    report = branch_report(Project.open(foreign_pii), ["dev"])
    plan = report.plans["dev"]
    assert plan.plan is not None

    # the comment shows locations relative to the project; what was found is the same
    def found(findings: Any) -> set[tuple[str, str, str, str, str]]:
        return {(f.policy, f.resource, f.environment, f.status, f.message) for f in findings}

    assert found(report.check.findings) == found(plan.findings) == found(plan.plan.findings)
    assert any(f.blocking for f in report.check.findings)
    comment = cli("comment", "--env", "dev", "-C", str(foreign_pii))
    planned = cli("plan", "--env", "dev", "-C", str(foreign_pii))
    assert comment.code == planned.code == 1
    # the comment's plan table marks the denied change as the plan does
    assert "| `+` | `DataSource/customer-transactions` | safe | :x: 1 deny |" in comment.out


def test_a_refused_apply_carries_its_findings_as_data(foreign_pii: Path) -> None:
    with pytest.raises(PlanRefused) as refused:
        Project.open(foreign_pii).apply("dev", ApplyOptions(allow_dirty=True))
    error = refused.value
    assert error.reason == "policy"
    assert error.findings and all(f.blocking for f in error.findings)
    assert ("residency.region", "DataSource/customer-transactions", "dev") in {
        (f.policy, f.resource, f.environment) for f in error.findings
    }
    assert ("waiver.expired", "Waiver/eu-ledger", "dev") in {
        (f.policy, f.resource, f.environment) for f in error.findings
    }


def _count(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, calls: dict[str, int]) -> None:
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] = calls.get(name, 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_one_apply_validates_resolves_evaluates_policy_and_opens_the_store_once(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlspec.app.project as project_module
    import mlspec.policy.evaluate as evaluate
    import mlspec.state.store as store_module

    root = reference_copy(tmp_path / "repo")
    calls: dict[str, int] = {}
    _count(monkeypatch, project_module, "validate_files", calls)
    _count(monkeypatch, project_module, "resolve_environment", calls)
    _count(monkeypatch, evaluate, "check_graph", calls)
    _count(monkeypatch, store_module, "open_store", calls)
    result = cli("apply", "--env", "local", "--auto-approve", "--artifacts-only", "-C", str(root))
    assert result.code == 0, result.out + result.err
    assert "Apply complete" in result.out
    assert calls == {"validate_files": 1, "resolve_environment": 1, "check_graph": 1, "open_store": 1}


def test_commands_use_the_default_environment(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = reference_copy(tmp_path / "repo")
    edit(root, "mlspec.yaml", "default_environment: local", "default_environment: dev")
    planned = cli("plan", "-C", str(root), "--format", "json")
    assert planned.code == 0 and json.loads(planned.out)["environment"] == "dev"
    graph = cli("graph", "-C", str(root))
    assert graph.code == 0 and "dev" in graph.out
    explicit = cli("plan", "--env", "staging", "-C", str(root), "--format", "json")
    assert json.loads(explicit.out)["environment"] == "staging"


def test_without_env_or_default_environment_the_usage_error_stays(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = reference_copy(tmp_path / "repo")
    edit(root, "mlspec.yaml", "  default_environment: local\n", "")
    for command in (["plan"], ["graph"], ["diff"], ["status"]):
        result = cli(*command, "-C", str(root))
        assert result.code == 2, (command, result.out, result.err)
        assert "Missing option '--env'" in result.err


def test_plan_shows_an_active_waiver_that_expires_soon(
    tmp_path: Path, cli: Callable[..., CliResult], gnupg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    root = reference_copy(tmp_path / "repo")
    edit(root, "specs/sources/payments.yaml", "region: uae-north\n  classification: pii",
         "region: eu-west\n  classification: pii")  # fmt: skip
    soon = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    (root / "specs" / "waivers.yaml").write_text(EXPIRED_WAIVER.replace("2020-01-31", soon))
    approve_waivers(root, gnupg, monkeypatch)  # signed by an approver of dev
    result = cli("plan", "--env", "dev", "-C", str(root))
    out = result.out
    assert "waived[residency.region]" in out and "(waived by Waiver/eu-ledger)" in out
    assert "warn[waiver.expiring]" in out and f"expires on {soon} (10 days)" in out
    # the waiver names the source only: what is derived from it still denies, so apply would refuse
    assert "deny[residency.derived]" in out and result.code == 1
    plan = json.loads(cli("plan", "--env", "dev", "--format", "json", "-C", str(root)).out)
    statuses = {(f["policy"], f["status"]) for f in plan["findings"]}
    assert ("residency.region", "waived") in statuses and ("waiver.expiring", "failed") in statuses
