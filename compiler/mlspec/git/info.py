"""Where a change comes from: the git revision of the project and who is applying it."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from mlspec.git.runner import Git, GitError


@dataclass(frozen=True)
class Revision:
    """The commit the specs are at, and whether the working tree has uncommitted changes."""

    commit: str
    dirty: bool

    def __str__(self) -> str:
        return self.commit + ("+dirty" if self.dirty else "")


UNVERSIONED = Revision("unversioned", False)


def revision(root: Path, own: tuple[Path, ...] = ()) -> Revision:
    """The project's git revision; ``unversioned`` outside a git repository (or before its first commit).

    Untracked files under ``own`` (mlspec's state, caches and outputs) and any
    ``.mlspec`` folder do not make the tree dirty, whether git ignores them or not.
    """
    try:
        top = Git(root).toplevel()
        repo = Git(top)
        commit = repo.rev_parse("HEAD")
        entries = repo.output_bytes("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    except (GitError, OSError):  # no git, not a repository, or no commit yet
        return UNVERSIONED
    mine = [p.resolve() for p in own]
    for entry in entries.decode(errors="surrogateescape").split("\0"):
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code != "??":
            return Revision(commit, True)  # a tracked file differs from HEAD (staged or not)
        if ".mlspec" not in path.split("/") and not any((top / path).is_relative_to(m) for m in mine):
            return Revision(commit, True)
    return Revision(commit, False)


def actor(explicit: str | None = None, root: Path | None = None) -> str:
    """Who is applying: --as, MLSPEC_ACTOR, the git user's email (when ``root`` is in a repository), the login."""
    if explicit:
        return explicit
    if os.environ.get("MLSPEC_ACTOR"):
        return os.environ["MLSPEC_ACTOR"]
    if root is not None:
        try:
            repo = Git(Git(root).toplevel())
            email = repo.run("config", "--get", "user.email").stdout.strip()
            if email:
                return email
        except (GitError, OSError):  # no repository
            pass
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
