"""Promotion's git side: the clean commit it starts from, and the one commit that proposes the change.

The commit goes on a new branch, made with a private index so that the working tree
and the current branch stay untouched, or (``--commit``) on the current branch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import UsageError
from mlspec.git.runner import Git, GitError

if TYPE_CHECKING:
    from mlspec.app.project import Project


def clean_commit(project: Project) -> str:
    """HEAD's commit; refuses a project outside git or with uncommitted changes (mlspec's own files aside)."""
    from mlspec.git.info import revision

    state = revision(project.root, (project.home / ".mlspec",))
    if state.commit == "unversioned":
        raise UsageError(f"{project.root} is not in a git repository with a commit; promotion proposes a commit")
    if state.dirty:
        raise UsageError(
            "the working tree has uncommitted changes; promotion commits exactly one change and never mixes in yours",
            hint="commit or stash your changes first (git stash), then promote again",
        )
    return state.commit


def repository_root(project: Project) -> Path:
    """The root of the git work tree the project is in."""
    return Git(project.root).toplevel()


def commit_on_current(repo_root: Path, relative: str, text: str, message: str) -> tuple[str, str]:
    """Write ``relative`` (a path in the work tree) and commit it on the current branch: (commit, branch)."""
    git = Git(repo_root)
    (repo_root / relative).write_text(text, encoding="utf-8")
    git.output("add", "--", relative)
    git.output("commit", "-q", "-m", message, "--", relative)
    return git.output("rev-parse", "HEAD"), git.output("rev-parse", "--abbrev-ref", "HEAD")


def commit_on_new_branch(repo_root: Path, branch: str, relative: str, text: str, message: str) -> str:
    """A commit on top of HEAD that changes ``relative`` to ``text``, on a new ``branch``; the commit id."""
    git = Git(repo_root)
    try:
        git.output("check-ref-format", "--branch", branch)
    except GitError:
        raise UsageError(f"'{branch}' is not a valid branch name", hint="see git check-ref-format") from None
    if git.succeeds("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"):
        raise UsageError(f"branch '{branch}' already exists", hint="pass --branch NAME, or delete the old branch")
    commit = _commit_without_checkout(git, relative, text, message)
    git.output("branch", branch, commit)
    return commit


def _commit_without_checkout(git: Git, relative: str, text: str, message: str) -> str:
    """A commit on top of HEAD that changes one file, made with a private index: the working tree is untouched."""
    with tempfile.TemporaryDirectory(prefix="mlspec-promote-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git.output("read-tree", "HEAD", env=env)
        blob = git.output("hash-object", "-w", "--stdin", stdin=text)
        mode = git.output("ls-tree", "HEAD", "--", relative).split(" ", 1)[0] or "100644"
        git.output("update-index", "--cacheinfo", f"{mode},{blob},{relative}", env=env)
        tree = git.output("write-tree", env=env)
        return git.output("commit-tree", tree, "-p", "HEAD", "-F", "-", stdin=message)
