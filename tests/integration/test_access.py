"""Access control: who may plan, apply and destroy, proven identities, approvals recorded in git (merges, GPG-signed
commits) or given by a protected CI environment.

Real git repositories and real gpg keys in a temporary GNUPGHOME; the CI's OIDC issuer is a JWKS on loopback with
keys of the test's own (a stand-in for token.actions.githubusercontent.com); production on the output-folder target.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlspec.app.paths import state_store
from mlspec.app.project import Project
from mlspec.state.base import verify_chain
from mlspec.state.model import AuditRecord
from tests.conftest import REPO, CliResult, copy_platform, gen_key, parse
from tests.integration.test_lifecycle import edit, make_project
from tests.unit.test_serving_auth import IdentityProvider

PEOPLE = ("alice@bank.ae", "bob@bank.ae", "eve@bank.ae", "auditors@bank.ae", "rita@bank.ae")
REPOSITORY = "uae-bank/ml-platform"

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
    for name in ("MLSPEC_ACTOR", "MLSPEC_OIDC_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def people(gnupg: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Each person's OpenPGP key (fingerprint by email), in the keyring mlspec verifies with."""
    monkeypatch.setenv("GNUPGHOME", str(gnupg))
    return {email: gen_key(gnupg, f"{email.split('@')[0].title()} <{email}>") for email in PEOPLE}


@pytest.fixture
def ci() -> Iterator[IdentityProvider]:
    """The CI's OIDC issuer (GitHub Actions' stand-in): a JWKS on loopback and the keys to mint job tokens."""
    provider = IdentityProvider()
    yield provider
    provider.server.shutdown()


def proofs(people: dict[str, str], ci: IdentityProvider, environment: str = "production") -> str:
    """access.signers (everyone's key) and access.ci (the stand-in issuer, this repository, a protected environment)."""
    signers = ", ".join(f"{key}: {email}" for email, key in people.items())
    return (f"    signers: {{{signers}}}\n"
            f"    ci: {{issuer: '{ci.issuer}', repository: {REPOSITORY}, environment: {environment}}}\n")  # fmt: skip


def job_token(ci: IdentityProvider, **claims: object) -> str:
    """An ID token of a job of this repository on main in the protected environment (claims override)."""
    base = {"aud": "mlspec", "sub": f"repo:{REPOSITORY}:environment:production", "repository": REPOSITORY,
            "ref": "refs/heads/main", "environment": "production", "run_id": "4242"}  # fmt: skip
    return ci.token(**{**base, **claims})


def act(root: Path, people: dict[str, str], email: str) -> None:
    """``email`` acts: an empty commit on HEAD signed with their key (what proves a person outside CI)."""
    key = people[email]
    git(root, "-c", f"user.signingkey={key}", "commit", "--allow-empty", f"--gpg-sign={key}", "-qm", "act",
        email=email)  # fmt: skip


def commit_signed(root: Path, message: str, people: dict[str, str], email: str) -> None:
    key = people[email]
    git(root, "add", "-A", email=email)
    git(root, "-c", f"user.signingkey={key}", "commit", f"--gpg-sign={key}", "-qm", message, email=email)


def test_only_listed_users_and_group_members_may_apply_and_destroy_and_every_refusal_is_audited(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, people: dict[str, str],
    ci: IdentityProvider,
) -> None:  # fmt: skip
    root = repo_with(tmp_path / "repo", ACCESS + proofs(people, ci))
    apply = ("apply", "--env", "prod", "--auto-approve", "-C", str(root))
    # a typed name proves nothing outside the local tier
    typed = cli(*apply, "--as", "alice@bank.ae")
    assert typed.code == 1 and applied(root) == set()
    assert "alice@bank.ae is only asserted (--as, MLSPEC_ACTOR or git user.email)" in typed.err
    assert "a HEAD commit signed by a key of access.signers" in typed.err and "id-token: write" in typed.err
    act(root, people, "eve@bank.ae")  # eve, proven by her signature, is not listed
    refused = cli(*apply, "--as", "alice@bank.ae")  # and cannot claim to be someone else
    assert refused.code == 1 and applied(root) == set()
    assert "error: eve@bank.ae may not apply 'prod'; who may apply: oncall (bob@bank.ae, ci@github), alice@bank.ae" in (
        refused.err
    )
    # the CI job, proven by its OIDC token, is a group member; the audit names who applied and how it is known
    token = job_token(ci)
    monkeypatch.setenv("MLSPEC_OIDC_TOKEN", token)
    assert cli(*apply).code == 0
    monkeypatch.delenv("MLSPEC_OIDC_TOKEN")
    assert "DataSource/txns" in applied(root)
    assert [r.actor for r in audit(root) if r.record.get("type") == "apply"] == ["ci@github"]
    (proof,) = [r.record for r in audit(root) if r.record.get("type") == "identity"]
    assert proof["method"] == "ci-oidc" and proof["evidence"]["repository"] == REPOSITORY
    assert proof["evidence"]["run_id"] == "4242" and token.split(".")[2] not in str(audit(root)), "never the token"
    # alice, listed by name, applies the commit she signed
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit_signed(root, "longer ttl", people, "alice@bank.ae")
    assert cli(*apply).code == 0
    # destroy needs the same right as apply
    act(root, people, "eve@bank.ae")
    gone = cli("destroy", "--env", "prod", "--auto-approve", "--allow-destroy", "-C", str(root))
    assert gone.code == 1 and "eve@bank.ae may not destroy 'prod'" in gone.err and applied(root)
    assert [(d["actor"], d["operation"], d["reason"]) for d in denials(root)] == [
        ("alice@bank.ae", "apply", "unproven-identity"),
        ("eve@bank.ae", "apply", "not-allowed"),
        ("eve@bank.ae", "destroy", "not-allowed"),
    ]
    assert denials(root)[1]["allowed"] == ["oncall", "alice@bank.ae"]
    log = cli("audit", "log", "--env", "prod", "-C", str(root)).out
    assert "prod access-denied by eve@bank.ae" in log and "may not destroy" in log
    assert "prod identity by ci@github" in log and "ci@github proven by ci-oidc for apply" in log
    # anyone may plan when plan is not restricted, proven or not
    assert cli("plan", "--env", "prod", "--as", "someone@example.com", "-C", str(root)).code == 0
    # a token of another repository, or one about to be replayed after it expired, proves nothing
    for token, why in ((job_token(ci, repository="someone/else"), "is for repository 'someone/else'"),
                       (job_token(ci, exp=1, iat=0), "Signature has expired")):  # fmt: skip
        monkeypatch.setenv("MLSPEC_OIDC_TOKEN", token)
        forged = cli(*apply)
        assert forged.code == 1 and why in forged.err, forged.err


def test_a_restricted_plan_refuses_others_and_appliers_may_always_plan(
    tmp_path: Path, cli: Callable[..., CliResult], people: dict[str, str], ci: IdentityProvider
) -> None:
    root = repo_with(tmp_path / "repo", ACCESS + "    plan: [auditors@bank.ae]\n" + proofs(people, ci))
    act(root, people, "eve@bank.ae")
    refused = cli("plan", "--env", "prod", "-C", str(root))
    assert refused.code == 1 and "eve@bank.ae may not plan 'prod'; who may plan: auditors@bank.ae, oncall" in (
        refused.err
    )
    for who in ("auditors@bank.ae", "bob@bank.ae", "alice@bank.ae"):
        act(root, people, who)
        assert cli("plan", "--env", "prod", "-C", str(root)).code == 0, who
    assert [(d["actor"], d["operation"]) for d in denials(root)] == [("eve@bank.ae", "plan")]


def test_a_change_cannot_grant_itself_access_the_last_applied_commit_rules(
    tmp_path: Path, cli: Callable[..., CliResult], people: dict[str, str], ci: IdentityProvider
) -> None:
    root = repo_with(tmp_path / "repo", ACCESS + proofs(people, ci))
    apply = ("apply", "--env", "prod", "--auto-approve", "-C", str(root))
    act(root, people, "alice@bank.ae")
    assert cli(*apply).code == 0
    edit(
        root, "environments/prod.yaml", "apply: [oncall, alice@bank.ae]", "apply: [oncall, alice@bank.ae, eve@bank.ae]"
    )
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit_signed(root, "let eve in", people, "eve@bank.ae")
    refused = cli(*apply)
    assert refused.code == 1 and "eve@bank.ae may not apply" in refused.err
    assert "the last applied commit" in refused.err
    # someone the applied rules allow lands it; from then on eve may apply
    act(root, people, "bob@bank.ae")
    assert cli(*apply).code == 0
    edit(root, "specs/all.yaml", "ttl: 14d", "ttl: 21d")
    commit_signed(root, "eve's change", people, "eve@bank.ae")
    assert cli(*apply).code == 0


MERGE = ACCESS + "    approval: {required: true, method: merge, approvers: [release]}\n"


def test_merge_approval_needs_a_merge_of_the_change_by_an_approver_who_did_not_write_it(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, people: dict[str, str],
    ci: IdentityProvider,
) -> None:  # fmt: skip
    """Below production a merge by an approver (not the change's author) is the approval; the CI job applies."""
    root = repo_with(tmp_path / "repo", MERGE + proofs(people, ci))
    edit(root, "environments/prod.yaml", "tier: production", "tier: staging")
    commit(root, "a staging environment")
    monkeypatch.setenv("MLSPEC_OIDC_TOKEN", job_token(ci))
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


def test_on_production_a_merge_is_approved_only_by_a_job_of_the_protected_ci_environment(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, people: dict[str, str],
    ci: IdentityProvider,
) -> None:  # fmt: skip
    """Git author metadata is not proof: on production the merge method's approval is the protected CI environment
    (its required reviewers approved the job), shown by the job's verified token."""
    root = repo_with(tmp_path / "repo", MERGE + proofs(people, ci))
    apply = ("apply", "--env", "prod", "--auto-approve", "-C", str(root))
    git(root, "checkout", "-qb", "feature")
    edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    commit(root, "longer ttl")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "--no-ff", "-qm", "Merge feature (reviewed)", "feature", email="rita@bank.ae")
    act(root, people, "alice@bank.ae")  # alice may apply, and a release manager merged: not enough here
    alice = cli(*apply)
    assert alice.code == 1 and "only a job of the protected CI environment 'production'" in alice.err
    monkeypatch.setenv("MLSPEC_OIDC_TOKEN", job_token(ci, environment="preview"))
    other = cli(*apply)
    assert other.code == 1 and "is for environment 'preview', not 'production'" in other.err
    monkeypatch.setenv("MLSPEC_OIDC_TOKEN", job_token(ci))
    assert cli(*apply).code == 0 and "DataSource/txns" in applied(root)
    assert [d["reason"] for d in denials(root)] == ["no-approval"]
    (approval,) = [r.record for r in audit(root) if r.record.get("type") == "approval"]
    assert approval["approved_by"] == ["ci@github in the protected environment production"]
    assert approval["method"] == "merge" and len(approval["commit"]) == 40


def test_signed_commit_approval_by_an_approvers_key(
    tmp_path: Path, cli: Callable[..., CliResult], gnupg: Path, monkeypatch: pytest.MonkeyPatch,
    people: dict[str, str], ci: IdentityProvider,
) -> None:  # fmt: skip
    approver = people["rita@bank.ae"]
    other = gen_key(gnupg, "Mallory <mallory@example.com>")
    root = repo_with(
        tmp_path / "repo",
        ACCESS + f"    approval: {{method: signed_commit, approvers: [{approver}]}}\n" + proofs(people, ci),
    )
    monkeypatch.setenv("MLSPEC_OIDC_TOKEN", job_token(ci))  # the CI job applies; the approval is a signature
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
    (approval,) = [r.record for r in audit(root) if r.record.get("type") == "approval"]
    assert approval["approved_by"] == [approver] and approval["method"] == "signed_commit"
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
    assert refused.code == 1 and "intruder@example.com is only asserted" in refused.err
    assert "a job of uae-bank/ml-platform on refs/heads/main with its OIDC token (access.ci)" in refused.err
    assert access.ci is not None and access.ci.environment == "production" and access.ci.principal == "ci@github"
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
        "unproven-identity", "eve@bank.ae", "apply", "prod",
    )  # fmt: skip
    assert error.allowed == ("oncall", "alice@bank.ae")
    assert applied(root) == set()


def test_a_github_actions_job_gets_its_token_from_the_runner_for_mlspecs_audience(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, people: dict[str, str],
    ci: IdentityProvider,
) -> None:  # fmt: skip
    """With permissions: id-token: write a job has ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN: mlspec asks that URL for a
    token with audience mlspec, as actions/core's getIDToken does, and verifies it like any other."""
    import http.server
    import threading
    import urllib.parse

    asked: list[tuple[str, str]] = []
    token = job_token(ci)

    class Runner(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append((self.path, self.headers.get("Authorization", "")))
            body = json.dumps({"value": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runner)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = repo_with(tmp_path / "repo", ACCESS + proofs(people, ci))
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", f"http://127.0.0.1:{server.server_address[1]}/idtoken?x=1")
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-secret")
        assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(root)).code == 0
    finally:
        server.shutdown()
        server.server_close()
    path, authorization = asked[0]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(path).query) == {"x": ["1"], "audience": ["mlspec"]}
    assert authorization == "bearer runner-secret"
    assert [r.actor for r in audit(root) if r.record.get("type") == "apply"] == ["ci@github"]


class DeviceLoginProvider:
    """The organisation's identity provider on loopback: discovery, JWKS, RFC 8628 device authorization and token
    endpoints. The first poll is pending; then the person approved and an ID token for ``email`` comes back."""

    def __init__(self, email: str, *, lifetime: int = 300) -> None:
        import http.server
        import threading
        import urllib.parse

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.email, self.lifetime, self.polls, self.refuse = email, lifetime, 0, False
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self.reply(200, {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/keys",
                                     "device_authorization_endpoint": provider.issuer + "/device",
                                     "token_endpoint": provider.issuer + "/token"})  # fmt: skip
                elif self.path == "/keys":
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(provider.key.public_key()))
                    self.reply(200, {"keys": [{**jwk, "kid": "org-1", "alg": "RS256", "use": "sig"}]})
                else:
                    self.reply(404, {})

            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                assert form["client_id"] == ["mlspec-cli"], form
                if self.path == "/device":
                    self.reply(200, {"device_code": "dev-123", "user_code": "WDJB-MJHT", "interval": 0,
                                     "verification_uri": provider.issuer + "/activate", "expires_in": 600})  # fmt: skip
                    return
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:device_code"], form
                provider.polls += 1
                if provider.refuse:
                    self.reply(400, {"error": "access_denied"})
                elif provider.polls == 1:
                    self.reply(400, {"error": "authorization_pending"})
                else:
                    now = int(__import__("time").time())
                    claims = {"iss": provider.issuer, "aud": "mlspec-cli", "sub": "u-42", "email": provider.email,
                              "iat": now, "exp": now + provider.lifetime}  # fmt: skip
                    token = jwt.encode(claims, provider.key, algorithm="RS256", headers={"kid": "org-1"})
                    self.reply(200, {"id_token": token, "access_token": "x", "token_type": "Bearer"})

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_person_logs_in_with_a_device_code_and_applies_as_the_verified_person(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    idp = DeviceLoginProvider("alice@bank.ae")
    try:
        login = f"    login: {{issuer: '{idp.issuer}', client_id: mlspec-cli}}\n"
        root = repo_with(tmp_path / "repo", ACCESS + login)
        apply = ("apply", "--env", "prod", "--auto-approve", "-C", str(root))
        assert "alice@bank.ae is only asserted" in cli(*apply).err, "before logging in, nothing proves who acts"
        result = cli("login", "--env", "prod", "-C", str(root))
        assert result.code == 0 and f"open {idp.issuer}/activate and enter the code WDJB-MJHT" in result.out
        assert "logged in as alice@bank.ae" in result.out and idp.polls == 2, "pending once, then approved"
        (kept,) = (tmp_path / "cache" / "mlspec" / "login").iterdir()
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert cli(*apply, "--as", "ci@github").code == 0, "the verified person acts, whatever is typed"
        (proof,) = [r.record for r in audit(root) if r.record.get("type") == "identity"]
        assert proof["name"] == "alice@bank.ae" and proof["method"] == "oidc-login"
        assert proof["evidence"]["sub"] == "u-42" and json.loads(kept.read_text())["id_token"] not in str(audit(root))
        # another person's login: eve is verified, and eve may not apply
        idp.email, idp.polls = "eve@bank.ae", 0
        assert cli("login", "--env", "prod", "-C", str(root)).code == 0
        edit(root, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
        commit(root, "longer ttl")
        refused = cli(*apply)
        assert refused.code == 1 and "eve@bank.ae may not apply 'prod'" in refused.err
        # an edited token proves nothing: its signature no longer holds
        saved = json.loads(kept.read_text())
        head, body, signature = saved["id_token"].split(".")
        saved["id_token"] = f"{head}.{body}.{signature[:-4]}AAAA"
        kept.write_text(json.dumps(saved))
        assert "login token does not verify" in cli(*apply).err
        idp.refuse = True
        refused_login = cli("login", "--env", "prod", "-C", str(root))
        assert refused_login.code == 1 and "the login was refused at the identity provider" in refused_login.err
    finally:
        idp.server.shutdown()
        idp.server.server_close()
