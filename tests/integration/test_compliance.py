"""mlspec report compliance: lineage, regions, encryption, policies and waivers of sensitive data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.app.project import Project
from mlspec.report.compliance import build_compliance
from mlspec.report.views import render_html
from tests.conftest import REPO, CliResult, approve_waivers, copy_platform, write_files

EXAMPLE = REPO / "docs" / "examples" / "compliance-prod.md"
TODAY = "2030-01-15"

WAIVER = """
apiVersion: mlspec/v1
kind: Waiver
metadata: {name: eu-transactions, owner: ciso-office}
spec:
  policy: residency.region
  resources: [DataSource/customer-transactions]
  reason: "migration <script>alert(1)</script> moves card data back to uae-north (ML & risk)"
  approved_by: ciso & dpo
  expires: 2030-03-31
"""


@pytest.fixture(autouse=True)
def _registered() -> None:
    """The commands as cli.py registers them (a no-op once it does)."""
    from mlspec.cli import cli as main_cli
    from mlspec.cli import report as cli_report

    for command in cli_report.commands.commands.values():
        main_cli.commands.setdefault(command.name or "", command)


@pytest.fixture
def foreign(tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reference platform with card transactions moved to an EU region, under a waiver an approver signed."""
    (tmp_path / "platform").mkdir()
    root = copy_platform(tmp_path / "platform")
    path = root / "specs" / "sources" / "payments.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("region: uae-north", "region: eu-west", 1), encoding="utf-8")
    write_files(root, {"specs/waivers.yaml": WAIVER})
    approve_waivers(root, gnupg, monkeypatch)
    return root


def test_committed_prod_example_is_what_the_command_produces(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    out = tmp_path / "prod.md"
    result = cli("report", "compliance", "--env", "prod", "-C", str(REPO), "-o", str(out))
    assert result.code == 1 and "(not compliant)" in result.out, result.out + result.err  # the edge package row
    assert out.read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8"), (
        "docs/examples/compliance-prod.md is stale: "
        "run mlspec report compliance --env prod -o docs/examples/compliance-prod.md"
    )


def test_prod_report_follows_pii_from_source_to_endpoint(cli: Callable[..., CliResult]) -> None:
    result = cli("report", "compliance", "--env", "prod", "--format", "json", "-C", str(REPO))
    assert result.code == 1  # a row fails (the edge package is plaintext at rest): never "compliant" beside a FAIL
    data = json.loads(result.out)
    assert not data["ok"] and data["verdict"] == "not compliant: 1 hop(s) not encrypted at rest or in transit"
    assert data["allowed_regions"] == ["uae-north", "uae-central"]
    failing = [h["ref"] for h in data["hops"] if not (h["at_rest"]["ok"] and h["in_transit"]["ok"])]
    assert failing == ["Deployment/fraud-edge"] and data["hops"][0]["ref"] == "Deployment/fraud-edge"  # first
    fraud = next(r for r in data["resources"] if r["ref"] == "Deployment/fraud-api")
    assert [step["stage"] for step in fraud["lineage"]] == [
        "source", "feature view", "feature service", "training pipeline", "model", "deployment",
    ]  # fmt: skip
    assert fraud["lineage"][4]["refs"] == ["Model/fraud-detector"]
    assert fraud["sources"] == [
        "DataSource/customer-transactions",
        "DataSource/fraud-labels",
        "DataSource/merchant-risk",
    ]
    # the policies listed are exactly those the policy set declares, not a hard-coded list
    assert "bank.model_tags" in data["policies"] and "residency.derived" in data["policies"]
    assert fraud["passed"] == data["policies"] and fraud["failed"] == []
    # internal-only resources are not in the report; derived ones carry the most sensitive class
    refs = {r["ref"] for r in data["resources"]}
    assert "DataSource/app-engagement" not in refs and "FeatureView/app-engagement-features" not in refs
    hops = {h["ref"]: h for h in data["hops"]}
    assert hops["Model/fraud-detector"]["at_rest"] == {
        "ok": True,
        "detail": "model artifacts in azure://uaebankmlprod/models (uae-north): environment key kms://prod-platform",
    }
    assert "mesh mTLS (STRICT)" in hops["Deployment/fraud-api"]["in_transit"]["detail"]
    assert hops["DataSource/customer-transactions"]["at_rest"]["detail"] == "encrypted, key kms://payments-data"
    assert all(h["in_residency"] for h in data["hops"])
    # batch and edge deployments are judged by what they write and ship, not by an endpoint they do not have
    assert "table ml_prod.churn_scores" in hops["Deployment/churn-batch"]["at_rest"]["detail"]
    assert "secret://prod/warehouse" in hops["Deployment/churn-batch"]["in_transit"]["detail"]
    edge = hops["Deployment/fraud-edge"]
    assert edge["at_rest"]["ok"] is False and "plaintext" in edge["at_rest"]["detail"]
    assert "kms://prod-edge-signing" in edge["at_rest"]["detail"] and "endpoint" not in edge["in_transit"]["detail"]


def test_a_hop_outside_the_residency_fails_and_the_waiver_is_shown(
    foreign: Path, cli: Callable[..., CliResult]
) -> None:
    result = cli("report", "compliance", "--env", "prod", "--today", TODAY, "-C", str(foreign))
    assert result.code == 1
    text = result.out
    assert (
        "**Result: not compliant: 12 hop(s) outside the data residency, 1 hop(s) not encrypted at rest or in "
        "transit, 9 un-waived deny finding(s)**"
    ) in text
    assert "| `DataSource/customer-transactions` | source | pii | eu-west | **OUTSIDE: eu-west** |" in text
    assert "Waivers judged as of 2030-01-15." in text
    # the source's own residency finding is waived; what is derived from it is not (the waiver names only the source)
    key = re.search(r"approved_by: (\w+)", (foreign / "specs" / "waivers.yaml").read_text())[1]  # type: ignore[index]
    assert (
        f"| `Waiver/eu-transactions` | `residency.region` | `DataSource/customer-transactions` | {key} | "
        "2030-03-31 | active | residency.region on DataSource/customer-transactions |"
    ) in text
    assert "- waived: `residency.region`:" in text
    assert "| `residency.derived` | `Deployment/fraud-api` |" in text
    # churn features include the card-transaction view, so churn-api is outside too; the CRM source is not
    assert "| `Deployment/churn-api` | deployment | pii | eu-west, uae-north | **OUTSIDE: eu-west** |" in text
    assert "| `DataSource/customer-profile` | source | pii | uae-north | ok |" in text


def test_an_unsigned_waiver_is_reported_as_refused_and_waives_nothing(tmp_path: Path) -> None:
    (tmp_path / "platform").mkdir()
    root = copy_platform(tmp_path / "platform")
    path = root / "specs" / "sources" / "payments.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("region: uae-north", "region: eu-west", 1))
    write_files(root, {"specs/waivers.yaml": WAIVER})  # approved_by: ciso & dpo, signed by nobody
    report = build_compliance(Project.open(root), "prod", today=__import__("datetime").date(2030, 1, 15))
    (waiver,) = report.waivers
    assert waiver.status == "refused: not signed by an approver" and waiver.waives == ()
    assert any(r.policy == "waiver.unapproved" for r in report.blocking)


def test_expired_waiver_is_reported_as_expired(foreign: Path) -> None:
    report = build_compliance(Project.open(foreign), "prod", today=__import__("datetime").date(2031, 1, 1))
    (waiver,) = report.waivers
    assert waiver.status == "expired" and waiver.waives == () and len(waiver.approved_by) == 40  # the approver's key
    assert any(r.policy == "waiver.expired" for r in report.blocking)
    assert report.as_of is None  # no date printed unless asked for


def test_html_is_self_contained_and_escaped(foreign: Path, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    out = tmp_path / "r.html"
    result = cli(
        "report",
        "compliance",
        "--env",
        "prod",
        "--format",
        "html",
        "--today",
        TODAY,
        "-C",
        str(foreign),
        "-o",
        str(out),
    )
    assert result.code == 1 and "not compliant" in result.out
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "ML &amp; risk" in page  # the reason's own ampersand, escaped
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page), "no external assets"
    assert render_html(build_compliance(Project.open(foreign), "prod")) == render_html(
        build_compliance(Project.open(foreign), "prod")
    )


def test_unknown_environment_is_a_usage_error(cli: Callable[..., CliResult]) -> None:
    result = cli("report", "compliance", "--env", "prdo", "-C", str(REPO))
    assert result.code == 2 and "did you mean 'prod'" in result.err


def test_each_check_names_the_iso_27001_controls_and_pdpl_articles_it_evidences(
    foreign: Path, cli: Callable[..., CliResult]
) -> None:
    """The mapping follows the rows: prod fails encryption at rest (the edge package) but holds residency; the
    platform moved to eu-west fails residency (PDPL cross-border articles) too."""
    reference = json.loads(cli("report", "compliance", "--env", "prod", "--format", "json", "-C", str(REPO)).out)
    checks = {c["check"]: c for c in reference["controls"]}
    residency = checks["data residency of every hop"]
    assert residency["ok"] and residency["iso"] == ["A.5.34", "A.5.31"] and residency["pdpl"] == ["Art. 22", "Art. 23"]
    at_rest = checks["encryption at rest as enforced"]
    assert (
        not at_rest["ok"] and at_rest["iso"] == ["A.8.24"] and at_rest["evidence"] == "failing: Deployment/fraud-edge"
    )
    moved = json.loads(cli("report", "compliance", "--env", "prod", "--format", "json", "--today", TODAY, "-C",
                           str(foreign)).out)  # fmt: skip
    outside = {c["check"]: c for c in moved["controls"]}["data residency of every hop"]
    assert not outside["ok"] and "DataSource/customer-transactions" in outside["evidence"]
    text = cli("report", "compliance", "--env", "prod", "-C", str(REPO)).out
    assert (
        "| encryption at rest as enforced | A.8.24 Use of cryptography | Art. 20 Personal data security | **NO** |"
        in text
    )
