"""The one git runner (mlspec.git.runner) and the revision/actor it serves, against real git repositories."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from mlspec.errors import MlspecError
from mlspec.git import Git, GitError, GitNotInstalled, GitTimeout
from mlspec.git.info import actor, revision
from mlspec.git.runner import subcommand

IDENTITY = ["-c", "user.email=dev@bank.ae", "-c", "user.name=dev", "-c", "commit.gpgsign=false"]


def sh(root: Path, *args: str) -> str:
    """Plain git, independent of the code under test."""
    done = subprocess.run(["git", "-C", str(root), *IDENTITY, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    (root / "specs").mkdir()
    (root / "specs" / "a.yaml").write_text("kind: DataSource\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 4)  # not UTF-8
    sh(root, "add", "-A")
    sh(root, "commit", "-qm", "first")
    return root


def test_a_failing_command_raises_an_error_that_carries_its_command_exit_code_and_stderr(repo: Path) -> None:
    with pytest.raises(GitError) as caught:
        Git(repo).output("cat-file", "-p", "no-such-object")
    error = caught.value
    assert error.command == ("git", "-C", str(repo), "cat-file", "-p", "no-such-object")
    assert error.subcommand == "cat-file"
    assert error.returncode not in (None, 0)
    assert "no-such-object" in error.stderr
    assert error.message.startswith("git cat-file failed: fatal: ") and "\n" not in error.message
    assert isinstance(error, MlspecError) and error.exit_code == 1, "the CLI's exit code, not git's"


def test_run_reports_a_non_zero_exit_without_raising_and_check_raises(repo: Path) -> None:
    result = Git(repo).run("rev-parse", "--verify", "--quiet", "refs/heads/nope")
    assert not result.ok and result.returncode == 1 and result.stdout == ""
    with pytest.raises(GitError) as caught:
        result.check()
    assert caught.value.returncode == 1 and caught.value.message == "git rev-parse failed: exit 1"
    assert Git(repo).succeeds("rev-parse", "--verify", "HEAD")
    assert not Git(repo).succeeds("merge-base", "--is-ancestor", "HEAD", "refs/heads/nope")


def test_a_command_past_its_timeout_is_stopped_and_raises(repo: Path) -> None:
    slow = Git(repo, timeout=0.5)
    with pytest.raises(GitTimeout) as caught:
        slow.run("-c", "alias.pause=!sleep 3", "pause")
    assert caught.value.returncode is None and caught.value.timeout == 0.5
    assert caught.value.subcommand == "pause" and "stopped" in caught.value.message
    with pytest.raises(GitTimeout):  # a per-call timeout overrides the runner's
        Git(repo).run("-c", "alias.pause=!sleep 3", "pause", timeout=0.3)


def test_bytes_output_is_returned_untouched(repo: Path) -> None:
    payload = (repo / "data.bin").read_bytes()
    assert Git(repo).output_bytes("cat-file", "blob", "HEAD:data.bin") == payload
    assert Git(repo).run_bytes("cat-file", "blob", "HEAD:data.bin").stdout == payload
    with tarfile.open(fileobj=io.BytesIO(Git(repo).archive("HEAD"))) as tar:
        assert sorted(tar.getnames()) == ["data.bin", "specs", "specs/a.yaml"]
        extracted = tar.extractfile("data.bin")
        assert extracted is not None and extracted.read() == payload


def test_stdin_and_extra_environment_reach_git(repo: Path, tmp_path: Path) -> None:
    text = "promoted: yes\n"
    expected = hashlib.sha1(f"blob {len(text)}\0{text}".encode()).hexdigest()
    assert Git(repo).output("hash-object", "--stdin", stdin=text) == expected
    ident = Git(repo, env={"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@bank.ae"}).output(
        "var", "GIT_AUTHOR_IDENT"
    )
    assert ident.startswith("Ada <ada@bank.ae>")
    index = tmp_path / "private-index"
    Git(repo).output("read-tree", "HEAD", env={"GIT_INDEX_FILE": str(index)})
    assert index.is_file(), "the per-call environment was used"


def test_toplevel_and_rev_parse(repo: Path) -> None:
    assert Git(repo / "specs").toplevel() == repo.resolve()
    head = sh(repo, "rev-parse", "HEAD")
    assert Git(repo).rev_parse("HEAD") == head == Git(repo).rev_parse("main")
    sh(repo, "tag", "-a", "v1", "-m", "annotated")
    assert Git(repo).rev_parse("v1") == head, "a tag is peeled to its commit"
    with pytest.raises(GitError, match="'nope' names no commit"):
        Git(repo).rev_parse("nope")
    with pytest.raises(GitError):
        Git(repo.parent / "not-a-repo").toplevel()


def test_a_missing_git_is_an_error_with_a_hint(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(GitNotInstalled) as caught:
        Git(repo).output("status")
    assert caught.value.message == "git status failed: git is not installed" and "PATH" in caught.value.hint


def test_subcommand_skips_global_options() -> None:
    assert (
        subcommand(["git", "-C", "x", "-c", "a=b", "--no-pager", "verify-commit", "--raw", "HEAD"]) == "verify-commit"
    )
    assert subcommand(["git", "-C", "x"]) == "(no subcommand)"


def test_revision_is_the_head_commit_and_dirty_only_for_changes_that_are_not_mlspecs(repo: Path) -> None:
    head = sh(repo, "rev-parse", "HEAD")
    own = repo / "outputs"
    assert revision(repo) == revision(repo / "specs") and str(revision(repo)) == head
    (repo / ".mlspec").mkdir()
    (repo / ".mlspec" / "state.db").write_text("x")
    own.mkdir()
    (own / "model.onnx").write_text("x")
    assert not revision(repo, (own,)).dirty, "mlspec's own files do not make the tree dirty"
    assert revision(repo).dirty, "an untracked file outside mlspec's own folders does"
    (repo / "specs" / "a.yaml").write_text("kind: Entity\n")
    assert str(revision(repo, (own,))) == f"{head}+dirty"
    sh(repo, "add", "specs/a.yaml")
    assert revision(repo, (own,)).dirty, "a staged change counts too"


def test_revision_outside_git_or_before_the_first_commit_is_unversioned(tmp_path: Path) -> None:
    assert str(revision(tmp_path)) == "unversioned"
    sh(tmp_path, "init", "-q")
    assert str(revision(tmp_path)) == "unversioned"


def test_actor_is_the_repositorys_git_email_and_only_inside_a_repository(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLSPEC_ACTOR", raising=False)
    sh(repo, "config", "user.email", "owner@bank.ae")
    assert actor(root=repo) == "owner@bank.ae"
    assert actor("explicit", root=repo) == "explicit"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert actor(root=outside) == actor(), "no repository: the login name, never a global git identity"
