"""A pull request cannot weaken its own checks: with --changed-since, the base's policy engine, policy files and
access rules judge the change, and changing them is a deny. Real git repositories and a real HTTP listener."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import CliResult, copy_platform

GIT = ["git", "-c", "user.email=dev@bank.ae", "-c", "user.name=dev"]


def git(root: Path, *args: str) -> None:
    subprocess.run([*GIT, "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The reference platform committed on main, with a pull-request branch checked out."""
    root = tmp_path / "platform"
    root.mkdir()
    copy_platform(root)
    (root / "policies").mkdir()
    for name in ("bank.rego", "bank_test.rego"):
        (root / "policies" / name).write_text((Path(__file__).parents[2] / "policies" / name).read_text())
    (root / ".gitignore").write_text(".mlspec/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    git(root, "checkout", "-qb", "pr")
    return root


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server that would answer every policy query with "no finding" and records what it was sent."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            body = b'{"result": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def edit(root: Path, path: str, old: str, new: str) -> None:
    text = (root / path).read_text()
    assert old in text, (path, old)
    (root / path).write_text(text.replace(old, new))


def check(cli: Callable[..., CliResult], root: Path) -> CliResult:
    return cli("check", "--changed-since", "main", "-C", str(root))


def test_a_change_that_touches_no_check_is_judged_as_before(repo: Path, cli: Callable[..., CliResult]) -> None:
    edit(repo, "specs/training/fraud-detector.yaml", "epochs: 20,", "epochs: 25,")
    git(repo, "commit", "-qam", "tune")
    result = check(cli, repo)
    assert result.code == 0 and "governance.gate-changed" not in result.out, result.out


def test_re_pointing_the_policy_engine_is_denied_and_nothing_is_sent_there(
    repo: Path, cli: Callable[..., CliResult], listener: tuple[str, list[str]]
) -> None:
    url, seen = listener
    edit(repo, "mlspec.yaml", "policy: {engine: embedded}", f"policy: {{engine: opa, opa_url: {url}}}")
    git(repo, "commit", "-qam", "faster policies")
    result = check(cli, repo)
    assert result.code == 1, result.out
    assert "deny[governance.gate-changed]" in result.out or "governance.gate-changed" in result.out, result.out
    assert f"opa_url: None -> '{url}'" in result.out and "mlspec.yaml" in result.out
    assert seen == [], "the specs never went to a URL the base does not name"


def test_loosening_a_policy_is_denied_and_the_base_policy_still_judges(
    repo: Path, cli: Callable[..., CliResult]
) -> None:
    # the change drops the bank's tagging rule and, in the same change, an untagged production model
    edit(
        repo,
        "policies/bank.rego",
        'input.environment.spec.tier == "production"',
        'input.environment.spec.tier == "never"',
    )
    edit(repo, "specs/training/fraud-detector.yaml", ", use_case: card-fraud", "")
    git(repo, "commit", "-qam", "simplify")
    result = check(cli, repo)
    assert result.code == 1
    assert "the change changes the policy file bank.rego; the base's policies stay in force" in result.out
    assert "bank.model_tags" in result.out, "the base's rule still denies the untagged model"


def test_loosening_the_access_rules_is_denied(repo: Path, cli: Callable[..., CliResult]) -> None:
    edit(
        repo,
        "environments/prod.yaml",
        "ml-platform-oncall: [amal@bank.ae,",
        "ml-platform-oncall: [mallory@bank.ae, amal@bank.ae,",
    )
    git(repo, "commit", "-qam", "on call")
    result = check(cli, repo)
    assert result.code == 1
    assert "alters environment 'prod''s access rules and approvers" in result.out, result.out
    assert "environments/prod.yaml" in result.out


def test_the_plan_comment_of_such_a_change_blocks_too(repo: Path, cli: Callable[..., CliResult]) -> None:
    edit(repo, "policies/bank.rego", "not input.resource.spec.register.tags.use_case", "false")
    git(repo, "commit", "-qam", "drop the rule")
    result = cli("comment", "--env", "prod", "--changed-since", "main", "-C", str(repo))
    assert result.code == 1 and "governance.gate-changed" in result.out, result.out


def test_a_full_check_in_a_pull_request_job_is_judged_by_the_base_branch(
    repo: Path, cli: Callable[..., CliResult], listener: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SARIF step runs a plain `mlspec check`: in a GitHub pull-request job it still uses the base's engine."""
    url, seen = listener
    git(repo, "update-ref", "refs/remotes/origin/main", "main")  # as actions/checkout with fetch-depth 0 leaves it
    edit(repo, "mlspec.yaml", "policy: {engine: embedded}", f"policy: {{engine: opa, opa_url: {url}}}")
    git(repo, "commit", "-qam", "faster policies")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_BASE_REF", "main")
    result = cli("check", "--format", "sarif", "-C", str(repo))
    assert result.code == 1 and '"ruleId": "governance.gate-changed"' in result.out, result.out
    assert seen == []
    monkeypatch.delenv("GITHUB_BASE_REF")
    explicit = cli("check", "--base", "main", "-C", str(repo))
    assert explicit.code == 1 and "governance.gate-changed" in explicit.out
    assert seen == []
    missing = cli("check", "--base", "origin/nowhere", "-C", str(repo))
    assert missing.code == 2 and "names no commit here" in missing.err, "fails closed, never judged by its own"
