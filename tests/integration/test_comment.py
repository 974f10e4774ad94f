"""mlspec comment: one deterministic pull-request comment with the check and each environment's plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, write_files
from tests.integration.test_changed_since import CLICKS, WARN_POLICY, commit, edit, git, make_repo

MARKER = "<!-- mlspec:comment project=demo -->"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def comment(cli: Callable[..., CliResult], root: Path, out: Path, *args: str) -> tuple[int, str]:
    result = cli("comment", "-C", str(root), "-o", str(out), *args)
    assert out.is_file(), result.out + result.err
    return result.code, out.read_text(encoding="utf-8")


def test_a_deny_fails_the_comment_which_is_still_written(
    repo: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    edit(repo, "specs/serving.yaml", "strategy: canary, steps: [10, 50, 100]", "strategy: direct")
    code, text = comment(cli, repo, tmp_path / "c.md", "--env", "prod", "--env", "dev")
    assert code == 1
    lines = text.splitlines()
    assert lines[0] == MARKER and lines[1].startswith("### mlspec: `demo` — :x: 1 blocking finding(s)")
    # the summary table comes first: one row per environment with the counts per action
    table = text.index("| environment | check | create | update | delete | unchanged | breaking |")
    assert table < text.index("#### :x: Blocking findings (1)") < text.index("#### Plans")
    assert "| `dev` | :white_check_mark: 0 denied, 0 warning(s), 0 waived | 8 | 0 | 0 | 0 | 0 |" in text
    assert "| `prod` | :x: 1 denied, 0 warning(s), 0 waived | 8 | 0 | 0 | 0 | 0 |" in text
    # the deny names its policy, resource and spec file:line (relative to the project, wherever mlspec ran)
    deny = next(line for line in lines if "`Deployment/fraud-api` | `prod`" in line)
    assert deny.startswith("| `rollout.") and "| `specs/serving.yaml:6` |" in deny
    # plans are collapsed, one per environment, sorted
    assert "<details><summary><code>dev</code>: Plan: 8 to add, 0 to change, 0 to destroy</summary>" in text
    assert text.index("<code>dev</code>") < text.index("<code>prod</code>")
    assert text.count("<details>") == text.count("</details>") == 2
    assert "20" not in lines[1] and "UTC" not in text  # no dates, no times


def test_the_same_inputs_give_the_same_bytes_wherever_it_runs(
    repo: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    edit(repo, "specs/features.yaml", "ttl: 7d", "ttl: 14d")
    commit(repo, "longer ttl")
    args = ("--all-envs", "--changed-since", "main")
    first = comment(cli, repo, tmp_path / "a.md", *args)
    second = comment(cli, repo, tmp_path / "b.md", *args)
    third = cli("comment", *args, cwd=repo)  # another working folder: file paths in the comment do not move
    assert first == second and third.code == first[0] and third.out == first[1]
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()
    assert "_changed since main (merge base " in first[1]
    # only what the branch reaches: the feature view and everything downstream of it, not the source
    assert "`FeatureView/stats`" in first[1] and "`DataSource/txns`" not in first[1]


def test_long_lists_are_cut_with_and_n_more(repo: Path, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    many = "---\n".join(CLICKS.replace("name: clicks", f"name: clicks-{i:02d}").lstrip("\n") for i in range(40))
    write_files(repo, {"specs/many.yaml": many, "policies/custom.rego": WARN_POLICY})
    code, text = comment(cli, repo, tmp_path / "c.md", "--env", "prod")
    assert code == 0  # warnings do not block
    assert "<details><summary>Warnings and waived findings (48)</summary>" in text
    assert "_… and 33 more findings_" in text  # 15 shown
    assert "<details><summary><code>prod</code>: Plan: 48 to add, 0 to change, 0 to destroy</summary>" in text
    assert "_… and 23 more changes_" in text  # 25 shown
    assert len(text) < 20_000


def test_no_spec_changes_is_a_short_passing_comment(repo: Path, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "-b", "docs")
    edit(repo, "README.md", "# demo", "# the demo")
    commit(repo, "docs")
    code, text = comment(cli, repo, tmp_path / "c.md", "--env", "prod", "--changed-since", "main")
    assert code == 0 and text.splitlines()[0] == MARKER
    assert "no spec changes since main" in text and "<details>" not in text


def test_exit_codes_and_usage(repo: Path, cli: Callable[..., CliResult]) -> None:
    ok = cli("comment", "--env", "dev", "-C", str(repo))
    assert ok.code == 0 and ok.out.startswith(MARKER + "\n")
    assert cli("comment", "-C", str(repo)).code == 2
    assert cli("comment", "--env", "dev", "--all-envs", "-C", str(repo)).code == 2
    unknown = cli("comment", "--env", "nope", "-C", str(repo))
    assert unknown.code == 2 and "no environment named 'nope'" in unknown.err
    write_files(repo, {"specs/broken.yaml": "apiVersion: mlspec/v1\nkind: DataSource\nmetadata: {name: x}\n"})
    broken = cli("comment", "--env", "dev", "-C", str(repo))
    assert broken.code == 1 and "#### :x: Errors (" in broken.out and "`specs/broken.yaml:" in broken.out
