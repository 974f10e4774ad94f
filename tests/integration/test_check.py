"""mlspec check: the policy library catches what it must, waivers behave, reports validate, and policies fail closed."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from mlspec.app.project import Project
from tests.conftest import FIXTURES, REPO, CliResult, approve_waivers, copy_platform

TODAY = dt.date(2026, 11, 23)


def edit(root: Path, path: str, old: str, new: str) -> None:
    target = root / path
    text = target.read_text()
    assert old in text, (path, old)
    target.write_text(text.replace(old, new))


def blocking(root: Path, envs: list[str] | None = None) -> set[tuple[str, str, str]]:
    result = Project.open(root).check(envs, today=TODAY)
    assert not result.diagnostics, result.diagnostics
    return {(f.policy, f.resource, f.environment) for f in result.findings if f.blocking}


def test_the_reference_platform_passes_every_policy_in_every_environment(cli: Callable[..., CliResult]) -> None:
    result = cli("check", "-C", str(REPO), "--color", "never")
    assert result.code == 0, result.out
    assert "0 denied" in result.out and "4 environment(s)" in result.out


# (file, old text, new text, the finding that must appear)
VIOLATIONS = [
    ("specs/sources/payments.yaml", "region: uae-north\n  classification: pii", "region: eu-west\n  classification: pii",
     ("residency.region", "DataSource/customer-transactions", "prod")),
    ("specs/sources/payments.yaml", "region: uae-north\n  classification: pii", "region: eu-west\n  classification: pii",
     ("residency.derived", "Deployment/fraud-api", "prod")),
    ("specs/sources/customers.yaml", "encryption: {at_rest: true, kms_key: kms://customer-data}\n  schema:\n    - {name: customer_id, dtype: int64}\n    - {name: event_ts, dtype: unix_timestamp}\n    - {name: tenure_months",
     "encryption: {at_rest: false}\n  schema:\n    - {name: customer_id, dtype: int64}\n    - {name: event_ts, dtype: unix_timestamp}\n    - {name: tenure_months",
     ("encryption.at_rest", "DataSource/customer-profile", "dev")),
    ("environments/prod.yaml", "tls: required", "tls: preferred", ("encryption.tls", "Environment/prod", "prod")),
    ("environments/staging.yaml", "encryption: {kms_key: kms://staging-platform, signing_key: kms://staging-edge-signing, tls: required}", "encryption: {signing_key: kms://staging-edge-signing, tls: required}",
     ("encryption.environment_key", "Environment/staging", "staging")),
    ("environments/staging.yaml", "encryption: {kms_key: kms://staging-platform, signing_key: kms://staging-edge-signing, tls: required}", "encryption: {signing_key: kms://staging-edge-signing, tls: required}",
     ("encryption.model_artifacts", "TrainingPipeline/fraud-detector", "staging")),
    ("specs/deployments/churn-api.yaml", "endpoint: {visibility: internal}", "endpoint: {visibility: internal, tls: false}",
     ("encryption.endpoint_tls", "Deployment/churn-api", "dev")),
    ("specs/deployments/fraud-api.yaml", "auth: {required: true, method: oidc, audiences: [payments-gateway]}", "auth: {required: false, method: none}",
     ("access.auth_required", "Deployment/fraud-api", "prod")),
    ("specs/deployments/fraud-api.yaml", "endpoint: {visibility: internal, tls: true}", "endpoint: {visibility: public, tls: true}",
     ("access.no_public_pii", "Deployment/fraud-api", "dev")),
    ("specs/entities.yaml", "metadata: {name: merchant, owner: ml-platform}", "metadata: {name: merchant}",
     ("access.owner", "Entity/merchant", "local")),
    ("specs/deployments/churn-api.yaml", "strategy: ab\n    variants:\n      - {alias: champion, weight: 80}\n      - {alias: challenger, weight: 20}\n    sticky_key: customer_id\n",
     "strategy: direct\n", ("rollout.no_direct_in_prod", "Deployment/churn-api", "prod")),
    ("specs/deployments/fraud-api.yaml", "steps: [10, 50, 100]", "steps: [10, 50]",
     ("rollout.canary_complete", "Deployment/fraud-api", "dev")),
    ("specs/deployments/fraud-api.yaml", "    fallback: cpu\n    cpu: 2", "    fallback: none\n    cpu: 2",
     ("rollout.gpu_fallback", "Deployment/fraud-api", "prod")),
    ("specs/training/fraud-detector.yaml", "gpu: {type: nvidia-h100, count: 1, fallback: cpu}", "gpu: {type: nvidia-h100, count: 1, fallback: none}",
     ("rollout.gpu_fallback", "TrainingPipeline/fraud-detector", "prod")),
    ("specs/training/churn-model.yaml", "    gates: {auc: \">= 0.70\"}\n", "",
     ("governance.evaluation_gates", "TrainingPipeline/churn-model", "staging")),
    ("specs/training/fraud-detector.yaml", "explainability: true", "explainability: false",
     ("governance.explainability", "TrainingPipeline/fraud-detector", "prod")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"), VIOLATIONS, ids=[v[3][0] + ":" + v[3][1] for v in VIOLATIONS]
)
def test_every_rule_catches_its_violation(
    tmp_path: Path, path: str, old: str, new: str, expected: tuple[str, str, str]
) -> None:
    root = copy_platform(tmp_path)
    edit(root, path, old, new)
    assert expected in blocking(root)


def test_findings_point_at_the_offending_line(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    edit(root, "specs/deployments/fraud-api.yaml", "steps: [10, 50, 100]", "steps: [10, 50]")
    (finding,) = [
        f for f in Project.open(root).check(["dev"], today=TODAY).findings if f.policy == "rollout.canary_complete"
    ]
    line = (root / "specs/deployments/fraud-api.yaml").read_text().splitlines()[finding.location.line - 1]
    assert line.strip().startswith("steps: [10, 50]")
    assert finding.hint == "end the canary steps at 100"


WAIVER = """apiVersion: mlspec/v1
kind: Waiver
metadata: {{name: eu-engagement, owner: ciso-office}}
spec:
  policy: residency.region
  resources: [DataSource/app-engagement]
  reason: "migration ML-123 moves engagement data back to uae-central"
  approved_by: ciso
  expires: {expires}
"""


def foreign_engagement(root: Path, expires: str | None) -> None:
    edit(
        root,
        "specs/sources/customers.yaml",
        "region: uae-central\n  classification: internal",
        "region: eu-west\n  classification: confidential",
    )
    if expires:
        (root / "specs" / "waivers.yaml").write_text(WAIVER.format(expires=expires))


def test_an_active_waiver_waives_only_its_policy_and_resources_and_stays_visible(
    tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_platform(tmp_path)
    foreign_engagement(root, "2027-01-31")
    approve_waivers(root, gnupg, monkeypatch)
    result = Project.open(root).check(["prod"], today=TODAY)
    region = [f for f in result.findings if f.policy == "residency.region"]
    assert [(f.status, f.waiver) for f in region] == [("waived", "Waiver/eu-engagement")]
    derived = {f.resource for f in result.findings if f.policy == "residency.derived" and f.blocking}
    assert "FeatureView/app-engagement-features" in derived, "a waiver names resources; others still deny"
    assert not result.ok


def test_an_expired_waiver_denies_and_waives_nothing(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    foreign_engagement(root, "2026-10-31")
    result = Project.open(root).check(["prod"], today=TODAY)
    expired = [f for f in result.findings if f.policy == "waiver.expired"]
    assert len(expired) == 1 and expired[0].blocking and expired[0].location.file.endswith("waivers.yaml")
    assert expired[0].location.line == 9
    assert any(f.policy == "residency.region" and f.blocking for f in result.findings)


def test_a_waiver_about_to_expire_warns(tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_platform(tmp_path)
    foreign_engagement(root, "2026-12-10")
    approve_waivers(root, gnupg, monkeypatch)
    findings = Project.open(root).check(["prod"], today=TODAY).findings
    assert [f.severity for f in findings if f.policy == "waiver.expiring"] == ["warn"]
    assert any(f.policy == "residency.region" and f.status == "waived" for f in findings)


def test_check_passes_non_sensitive_data_abroad_and_denies_pii_abroad(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = copy_platform(tmp_path)
    edit(
        root,
        "specs/sources/customers.yaml",
        "region: uae-central\n  classification: internal",
        "region: eu-west\n  classification: internal",
    )
    assert cli("check", "-C", str(root)).code == 0, "public/internal data may live anywhere"
    edit(
        root,
        "specs/sources/customers.yaml",
        "region: eu-west\n  classification: internal",
        "region: eu-west\n  classification: pii",
    )
    assert cli("check", "--env", "prod", "-C", str(root)).code == 1


# Fail closed.
def write_policy(root: Path, name: str, text: str) -> None:
    (root / "policies").mkdir(exist_ok=True)
    (root / "policies" / name).write_text(text)


def test_a_malformed_policy_file_denies_with_its_location(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    write_policy(root, "broken.rego", "package mlspec.policies.custom\nimport rego.v1\ndeny contains x if {\n")
    result = Project.open(root).check(["dev"], today=TODAY)
    (finding,) = result.findings
    assert (finding.policy, finding.severity) == ("policy.error", "deny")
    assert finding.location.file.endswith("broken.rego") and finding.location.line >= 3
    assert not result.ok


def test_a_policy_that_errors_at_runtime_denies(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    write_policy(
        root,
        "bad.rego",
        'package mlspec.policies.custom\nimport rego.v1\ndeny contains {"id": "custom.x", "message": m} if {\n  m := sprintf("%d", [to_number("x")])\n}\n',
    )
    (finding,) = Project.open(root).check(["dev"], today=TODAY).findings
    assert finding.policy == "policy.error" and finding.blocking


def test_a_finding_without_an_id_is_itself_a_deny(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    write_policy(
        root,
        "sloppy.rego",
        'package mlspec.policies.custom\nimport rego.v1\ndeny contains "just a string" if input.resource.kind == "Environment"\n',
    )
    findings = Project.open(root).check(["dev"], today=TODAY).findings
    assert [f.policy for f in findings] == ["policy.malformed"] and findings[0].blocking


def test_a_policy_that_runs_too_long_is_stopped_and_denies(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    edit(root, "mlspec.yaml", "policy: {engine: embedded}", "policy: {engine: embedded, timeout_seconds: 1}")
    write_policy(
        root,
        "slow.rego",
        'package mlspec.policies.custom\nimport rego.v1\nn := count([x | some x in numbers.range(1, 300000000)])\ndeny contains {"id": "custom.slow", "message": "x"} if n < 0\n',
    )
    (finding,) = Project.open(root).check(["dev"], today=TODAY).findings
    assert finding.policy == "policy.error" and "did not finish within 1 s" in finding.message


def test_a_crashing_engine_denies(tmp_path: Path) -> None:
    import os

    from mlspec.policy.evaluate import PolicySet, check_graph

    class Crashing:
        def __init__(self) -> None:
            os._exit(139)  # what a segfaulting engine looks like from outside

    graph = Project.open(REPO).resolve("dev").graph
    assert graph is not None
    (finding,) = check_graph(graph, "p", PolicySet.for_project(None), today=TODAY, engine_factory=Crashing)  # type: ignore[arg-type]
    assert finding.policy == "policy.error" and "crashed" in finding.message and finding.blocking


def test_project_policies_add_rules(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    write_policy(
        root, "naming.rego",
        'package mlspec.policies.bank\nimport rego.v1\ndeny contains {"id": "bank.api_suffix", "path": "metadata.name", "message": "deployment names end in -api"} if {\n'
        '  input.resource.kind == "Deployment"\n  not endswith(input.resource.name, "-api")\n}\n',
    )  # fmt: skip
    edit(root, "specs/deployments/churn-api.yaml", "name: churn-api", "name: churn-service")
    edit(
        root, "environments/local.yaml", "    - target: Deployment/churn-api", "    - target: Deployment/churn-service"
    )
    assert ("bank.api_suffix", "Deployment/churn-service", "dev") in blocking(root)


def test_a_waiver_counts_only_when_an_approver_signed_it_and_never_for_longer_than_allowed(
    tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone can write approved_by: ciso; outside the local tier only the approver's key can sign for it, and no
    waiver may run longer than the environment's waivers.max_days (90 by default)."""
    import subprocess

    root = copy_platform(tmp_path)
    foreign_engagement(root, "2026-12-20")
    unsigned = Project.open(root).check(["prod", "local"], today=TODAY).findings
    (refused,) = [f for f in unsigned if f.policy == "waiver.unapproved"]
    assert refused.environment == "prod" and refused.blocking and refused.path == "spec.approved_by"
    assert (
        "approved_by 'ciso', who is not an approver of environment 'prod' (fatima@bank.ae, khalid@bank.ae)"
        in refused.message
    )
    assert any(f.policy == "residency.region" and f.blocking and f.environment == "prod" for f in unsigned)
    assert any(f.policy == "residency.region" and f.status == "waived" for f in unsigned if f.environment == "local")
    key = approve_waivers(root, gnupg, monkeypatch)
    assert any(f.policy == "residency.region" and f.status == "waived" for f in Project.open(root).check(
        ["prod"], today=TODAY).findings)  # fmt: skip
    # the waiver edited after the approver signed: nobody signed what is there now
    edit(root, "specs/waivers.yaml", "expires: 2026-12-20", "expires: 2026-12-21")
    subprocess.run(["git", "-C", str(root), "-c", "user.email=dev@bank.ae", "-c", "user.name=dev", "commit", "-qam",
                    "a week more"], check=True)  # fmt: skip
    (edited,) = [f for f in Project.open(root).check(["prod"], today=TODAY).findings if f.policy == "waiver.unapproved"]
    assert f"carries no signature of {key}" in edited.message
    # signed, but for ten years: longer than prod allows
    edit(root, "specs/waivers.yaml", "expires: 2026-12-21", "expires: 2036-12-21")
    approve_waivers(root, gnupg, monkeypatch)
    findings = Project.open(root).check(["prod", "local"], today=TODAY).findings
    too_long = [f for f in findings if f.policy == "waiver.too_long"]
    assert {f.environment for f in too_long} == {"prod", "local"} and all(f.blocking for f in too_long)
    assert "allows at most 90 (waivers.max_days)" in too_long[0].message
    assert not any(f.status == "waived" for f in findings)


# Reports.
@pytest.fixture
def failing(tmp_path: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = copy_platform(tmp_path)
    foreign_engagement(root, (dt.date.today() + dt.timedelta(days=60)).isoformat())
    edit(root, "specs/deployments/fraud-api.yaml", "steps: [10, 50, 100]", "steps: [10, 50]")
    approve_waivers(root, gnupg, monkeypatch)
    return root


def test_sarif_validates_against_the_sarif_schema(failing: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("check", "--format", "sarif", "-C", str(failing))
    assert result.code == 1
    log = json.loads(result.out)
    schema = json.loads((FIXTURES / "schemas" / "sarif" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft4Validator(schema).validate(log)
    results = log["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"residency.region", "rollout.canary_complete"}
    waived = [r for r in results if r["ruleId"] == "residency.region"]
    assert all(r["suppressions"][0]["justification"] == "waived by Waiver/eu-engagement" for r in waived)
    assert all(r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1 for r in results)


def test_junit_counts_failures_and_skips(failing: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("check", "--format", "junit", "-C", str(failing))
    root = ET.fromstring(result.out.split("?>", 1)[1])
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"policies.local", "policies.dev", "policies.staging", "policies.prod"}
    prod = suites["policies.prod"]
    assert int(prod.get("failures") or 0) == len(prod.findall("testcase/failure")) > 0
    assert int(prod.get("skipped") or 0) == len(prod.findall("testcase/skipped")) == 1


def test_github_annotations_and_json(failing: Path, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    annotations = cli("check", "--format", "github", "-C", str(failing)).out.splitlines()
    assert any(
        line.startswith("::error file=") and "title=rollout.canary_complete (dev)" in line for line in annotations
    )
    assert not any("residency.region" in line for line in annotations), "waived findings are not annotated"
    out = tmp_path / "check.json"
    assert cli("check", "--format", "json", "-o", str(out), "-C", str(failing)).code == 1
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1 and report["ok"] is False
    assert {"policy", "severity", "status", "resource", "environment", "file", "line", "fix", "waiver"} <= set(
        report["findings"][0]
    )


def _test_rules(root: Path) -> int:
    """Every test rule of the library's and the project's *_test.rego files: what `mlspec policy test` runs."""
    folders = (REPO / "compiler/mlspec/policy/library", root / "policies")
    return sum(
        len(re.findall(r"^test_\w+", path.read_text(encoding="utf-8"), re.MULTILINE))
        for folder in folders
        for path in folder.rglob("*_test.rego")
    )


def test_policy_test_command(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("policy", "test", "-C", str(REPO))
    rules = _test_rules(REPO)
    assert rules > 20
    assert result.code == 0 and result.out.strip().endswith(f"{rules} passed, 0 failed")
    root = copy_platform(tmp_path)
    write_policy(
        root,
        "mine_test.rego",
        "package mine_test\nimport rego.v1\ntest_fails if { 1 == 2 }\ntest_passes if { 1 == 1 }\n",
    )
    failed = cli("policy", "test", "-C", str(root))
    assert failed.code == 1 and "FAIL: " in failed.out and "test_fails" in failed.out
    assert failed.out.strip().endswith(f"{_test_rules(root) - 1} passed, 1 failed")


# OPA server mode.
def _as_opa(root: Path, url: str) -> None:
    edit(root, "mlspec.yaml", "policy: {engine: embedded}", f"policy: {{engine: opa, opa_url: '{url}'}}")


def test_server_mode_gives_the_same_findings_as_embedded(tmp_path: Path) -> None:
    from tests.opa_api_server import opa_api_server

    root = copy_platform(tmp_path)
    foreign_engagement(root, "2027-06-30")
    edit(root, "specs/deployments/fraud-api.yaml", "steps: [10, 50, 100]", "steps: [10, 50]")
    embedded = Project.open(root).check(today=TODAY).findings
    with opa_api_server() as (url, state):
        _as_opa(root, url)
        served = Project.open(root).check(today=TODAY).findings
    assert served == embedded and len(embedded) > 5
    assert ("POST", "/v1/data/mlspec/policies") in state.requests
    assert any(method == "PUT" and path.startswith("/v1/policies/mlspec/") for method, path in state.requests)


def test_server_mode_fails_closed_when_the_server_is_unreachable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = copy_platform(tmp_path)
    _as_opa(root, f"http://127.0.0.1:{port}")
    result = Project.open(root).check(["prod"], today=TODAY)
    (finding,) = result.findings
    assert finding.policy == "policy.error" and "unreachable" in finding.message and not result.ok


def test_server_mode_needs_a_url(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = copy_platform(tmp_path)
    edit(root, "mlspec.yaml", "policy: {engine: embedded}", "policy: {engine: opa}")
    result = cli("check", "-C", str(root), "--color", "never")
    assert result.code == 1 and "engine: opa needs opa_url" in result.out
