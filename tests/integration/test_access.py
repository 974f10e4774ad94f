"""Access control: who may plan, apply and destroy, approvals recorded in git (merges, GPG-signed commits).

Real git repositories and a real gpg key in a temporary GNUPGHOME; production on the output-folder target.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.app.paths import state_store
from mlspec.app.project import Project
from mlspec.state.base import verify_chain
from mlspec.state.model import AuditRecord
from tests.conftest import REPO, CliResult, copy_platform, gen_key, parse
from tests.integration.test_lifecycle import edit, make_project

ACCESS = """  access:
    groups:
      oncall: [bob@bank.ae, ci@github]
      release: [rita@bank.ae, ravi@bank.ae]
    apply: [oncall, alice@bank.ae]
"""


def git(root: Path, *args: str, email: str = "alice@bank.ae", env: dict[str, str] | None = None) -> str:
    ident = [
        "-c",
        f"user.email={email}",
        "-c",
        f"user.name={email.split('@', maxsplit=1)[0]}",
        "-c",
        "commit.gpgsign=false",
    ]
    proc = subprocess.run(
        ["git", "-C", str(root), *ident, *args],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    return proc.stdout.strip()


def commit(root: Path, message: str, *, email: str = "alice@bank.ae") -> str:
    git(root, "add", "-A", email=email)
    git(root, "commit", "-qm", message, email=email)
    return git(root, "rev-parse", "HEAD")


def repo_with(root: Path, access: str) -> Path:
    """make_project's platform with ``access`` on prod, committed on main by alice."""
    make_project(root)
    with (root / "environments/prod.yaml").open("a") as env:
        env.write(access)
    (root / ".gitignore").write_text(".mlspec/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "config", "user.email", "alice@bank.ae")
    commit(root, "platform")
    return root


def audit(root: Path) -> list[AuditRecord]:
    store = state_store(Project.open(root))
    try:
        records = store.audit("prod")
    finally:
        store.close()
    assert verify_chain(records) == []
    return records


def denials(root: Path) -> list[dict[str, object]]:
    return [{"actor": r.actor, **r.record} for r in audit(root) if r.record.get("type") == "access-denied"]


def applied(root: Path) -> set[str]:
    store = state_store(Project.open(root))
    try:
        return set(store.read("prod").resources)
    finally:
        store.close()


@pytest.fixture(autouse=True)
def _no_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSPEC_ACTOR", raising=False)


def test_only_listed_users_and_group_members_may_apply_and_destroy_and_every_refusal_is_audited(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = repo_with(tmp_path / "repo", ACCESS)
    refused = cli("apply", "--env", "prod", "--auto-approve", "--as", "eve@bank.ae", "-C", str(root))
    assert refused.code == 1 and applied(root) == set()
    assert "error: eve@bank.ae may not apply 'prod'; who may apply: oncall (bob@bank.ae, ci@github), alice@bank.ae" in (
        refused.err
    )
    assert "MLSPEC_ACTOR" in refused.err  # the hint says how identity is determined
    # MLSPEC_ACTOR (CI) is a group member; the audit names who applied
    monkeypatch.setenv("MLSPEC_ACTOR", "ci@github")
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(root)).code == 0
    monkeypatch.delenv("MLSPEC_ACTOR")
    assert "DataSource/txns" in applied(root)
    assert [r.actor for r in audit(root) if r.record.get("type") == "apply"] == ["ci@github"]
    # the git user (alice, listed by name) may apply; case does not matter
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit(root, "longer ttl")
    assert cli("apply", "--env", "prod", "--auto-approve", "--as", "Alice@Bank.ae", "-C", str(root)).code == 0
    # destroy needs the same right as apply
    gone = cli("destroy", "--env", "prod", "--auto-approve", "--allow-destroy", "--as", "eve@bank.ae", "-C", str(root))
    assert gone.code == 1 and "eve@bank.ae may not destroy 'prod'" in gone.err and applied(root)
    assert [(d["actor"], d["operation"], d["reason"]) for d in denials(root)] == [
        ("eve@bank.ae", "apply", "not-allowed"),
        ("eve@bank.ae", "destroy", "not-allowed"),
    ]
    assert denials(root)[0]["allowed"] == ["oncall", "alice@bank.ae"]
    log = cli("audit", "log", "--env", "prod", "-C", str(root)).out
    assert "prod access-denied by eve@bank.ae" in log and "may not destroy" in log
    # anyone may plan when plan is not restricted
    assert cli("plan", "--env", "prod", "-C", str(root)).code == 0


def test_a_restricted_plan_refuses_others_and_appliers_may_always_plan(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = repo_with(tmp_path / "repo", ACCESS + "    plan: [auditors@bank.ae]\n")
    monkeypatch.setenv("MLSPEC_ACTOR", "eve@bank.ae")
    refused = cli("plan", "--env", "prod", "-C", str(root))
    assert refused.code == 1 and "eve@bank.ae may not plan 'prod'; who may plan: auditors@bank.ae, oncall" in (
        refused.err
    )
    for who in ("auditors@bank.ae", "bob@bank.ae", "alice@bank.ae"):
        monkeypatch.setenv("MLSPEC_ACTOR", who)
        assert cli("plan", "--env", "prod", "-C", str(root)).code == 0, who
    assert [(d["actor"], d["operation"]) for d in denials(root)] == [("eve@bank.ae", "plan")]


def test_a_change_cannot_grant_itself_access_the_last_applied_commit_rules(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = repo_with(tmp_path / "repo", ACCESS)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(root)).code == 0  # alice
    edit(
        root, "environments/prod.yaml", "apply: [oncall, alice@bank.ae]", "apply: [oncall, alice@bank.ae, eve@bank.ae]"
    )
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit(root, "let eve in", email="eve@bank.ae")
    refused = cli("apply", "--env", "prod", "--auto-approve", "--as", "eve@bank.ae", "-C", str(root))
    assert refused.code == 1 and "eve@bank.ae may not apply" in refused.err
    assert "the last applied commit" in refused.err
    # someone the applied rules allow lands it; from then on eve may apply
    assert cli("apply", "--env", "prod", "--auto-approve", "--as", "bob@bank.ae", "-C", str(root)).code == 0
    edit(root, "specs/all.yaml", "ttl: 14d", "ttl: 21d")
    commit(root, "eve's change", email="eve@bank.ae")
    assert cli("apply", "--env", "prod", "--auto-approve", "--as", "eve@bank.ae", "-C", str(root)).code == 0


MERGE = ACCESS + "    approval: {required: true, method: merge, approvers: [release]}\n"


def test_merge_approval_needs_a_merge_of_the_change_by_an_approver_who_did_not_write_it(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = repo_with(tmp_path / "repo", MERGE)
    apply = ("apply", "--env", "prod", "--auto-approve", "-C", str(root))
    first = cli(*apply)
    assert first.code == 1 and "'prod' needs 1 approval(s) by merge from release (rita@bank.ae, ravi@bank.ae)" in (
        first.err
    )
    assert "HEAD is not a merge commit" in first.err and applied(root) == set()
    # a reviewed change: alice's branch, merged by rita
    git(root, "checkout", "-qb", "feature")
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit(root, "longer ttl")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "--no-ff", "-qm", "Merge feature (reviewed)", "feature", email="rita@bank.ae")
    assert cli(*apply).code == 0 and "DataSource/txns" in applied(root)
    # an approver merging their own change is not a review
    git(root, "checkout", "-qb", "own", email="ravi@bank.ae")
    edit(root, "specs/all.yaml", "ttl: 14d", "ttl: 21d")
    commit(root, "ravi's change", email="ravi@bank.ae")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "--no-ff", "-qm", "Merge own", "own", email="ravi@bank.ae")
    own = cli(*apply)
    assert own.code == 1 and "ravi@bank.ae merged their own change" in own.err
    # a merge that brings in nothing new is no approval
    git(root, "reset", "-q", "--hard", "HEAD~1")
    edit(root, "specs/all.yaml", "ttl: 14d", "ttl: 28d")
    commit(root, "direct push")
    git(root, "merge", "--no-ff", "-qm", "fake", "feature", email="rita@bank.ae")  # already merged: no-op
    fake = cli(*apply)
    assert fake.code == 1 and ("brings in nothing new" in fake.err or "not a merge" in fake.err)
    assert [d["reason"] for d in denials(root)] == ["no-approval"] * 3


def test_signed_commit_approval_by_an_approvers_key(
    tmp_path: Path, cli: Callable[..., CliResult], gnupg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    approver = gen_key(gnupg, "Rita <rita@bank.ae>")
    other = gen_key(gnupg, "Mallory <mallory@example.com>")
    monkeypatch.setenv("GNUPGHOME", str(gnupg))
    root = repo_with(tmp_path / "repo", ACCESS + f"    approval: {{method: signed_commit, approvers: [{approver}]}}\n")
    apply = ("apply", "--env", "prod", "--auto-approve", "-C", str(root))
    unsigned = cli(*apply)
    assert unsigned.code == 1 and "by signed commit" in unsigned.err and "not signed" in unsigned.err

    def sign(key: str, message: str) -> str:
        git(root, "-c", f"user.signingkey={key}", "commit", "--allow-empty", f"--gpg-sign={key}", "-qm", message)
        return git(root, "rev-parse", "HEAD")

    sign(other, "approve (wrong key)")
    wrong = cli(*apply)
    assert wrong.code == 1 and f"signed by {other}" in wrong.err and "not a trusted key" in wrong.err
    sign(approver, "approve")  # an empty approval commit after the change
    assert cli(*apply).code == 0 and "DataSource/txns" in applied(root)
    # a later unsigned change is not covered by the earlier approval
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit(root, "unsigned change")
    assert cli(*apply).code == 1
    # HEAD itself signed by the approver
    edit(root, "specs/all.yaml", "ttl: 14d", "ttl: 21d")
    git(root, "add", "-A")
    git(root, "-c", f"user.signingkey={approver}", "commit", f"--gpg-sign={approver}", "-qm", "signed change")
    assert cli(*apply).code == 0
    assert [d["reason"] for d in denials(root)] == ["no-approval"] * 3
    # uncommitted edits are never approved, even with --allow-dirty
    edit(root, "specs/all.yaml", "ttl: 21d", "ttl: 28d")
    dirty = cli(*apply[:-2], "--allow-dirty", "-C", str(root))
    assert dirty.code == 1 and "uncommitted changes, which no approval covers" in dirty.err


@pytest.mark.parametrize(
    ("access", "message"),
    [
        ("{approval: {method: signed_commit, approvers: [rita@bank.ae]}}", "is not a GPG key fingerprint"),
        ("{approval: {method: merge, approvers: [a@b.ae], min: 2}}", "a merge records one approval"),
        (f"{{approval: {{method: signed_commit, approvers: [{'A' * 40}], min: 2}}}}", "only 1 approver"),
        ("{groups: {a: [b], b: [c@d.ae]}}", "groups hold users, not groups"),
        ("{apply: ['two words']}", "expected a value matching"),
    ],
)
def test_access_settings_are_validated(access: str, message: str) -> None:
    from tests.conftest import MINIMAL

    env = next(t for k, t in MINIMAL.items() if k == "Environment")
    _, problems = parse(env.rstrip() + f"\n          access: {access}\n")
    assert any(message.lower() in p.message.lower() for p in problems), [p.message for p in problems]


def test_the_reference_prod_is_restricted_and_local_is_open(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = copy_platform(tmp_path)
    project = Project.open(root)
    graphs = {env: project.resolve(env).graph for env in ("local", "prod")}
    assert graphs["local"] is not None and graphs["local"].env.spec.access is None
    assert graphs["prod"] is not None
    access = graphs["prod"].env.spec.access
    assert access is not None and access.approval is not None and access.approval.required
    from mlspec.access import allowed

    assert allowed(access, "apply", "ci@github") and not allowed(access, "apply", "intruder@example.com")
    assert allowed(access, "plan", "intruder@example.com")  # anyone may see a plan (pull-request comments)
    refused = cli("apply", "--env", "prod", "--auto-approve", "--as", "intruder@example.com", "-C", str(root))
    assert refused.code == 1 and "intruder@example.com may not apply 'prod'" in refused.err
    assert (REPO / "environments/prod.yaml").read_text().count("access:") == 1


def test_an_access_refusal_carries_who_what_and_who_may_as_data(tmp_path: Path) -> None:
    from mlspec.app.options import ApplyOptions, PlanOptions
    from mlspec.errors import AccessDenied, PlanRefused

    root = repo_with(tmp_path / "repo", ACCESS)
    with pytest.raises(AccessDenied) as denied:
        Project.open(root).apply("prod", ApplyOptions(plan=PlanOptions(who="eve@bank.ae")))
    error = denied.value
    assert isinstance(error, PlanRefused) and error.findings == ()
    assert (error.reason, error.actor, error.operation, error.environment) == (
        "not-allowed", "eve@bank.ae", "apply", "prod",
    )  # fmt: skip
    assert error.allowed == ("oncall", "alice@bank.ae")
    assert applied(root) == set()
