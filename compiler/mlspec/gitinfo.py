"""Where a change comes from: the git revision of the project and who is applying it."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Revision:
    """The commit the specs are at, and whether the working tree has uncommitted changes."""

    commit: str
    dirty: bool

    def __str__(self) -> str:
        return self.commit + ("+dirty" if self.dirty else "")


def revision(root: Path) -> Revision:
    """The project's git revision; ``unversioned`` outside a git repository."""
    try:
        import git

        repo = git.Repo(root, search_parent_directories=True)
        commit = repo.head.commit.hexsha
        return Revision(commit, repo.is_dirty(untracked_files=True))
    except Exception:  # no git, not a repository, or no commit yet
        return Revision("unversioned", False)


def actor(explicit: str | None = None, root: Path | None = None) -> str:
    """Who is applying: --as, MLSPEC_ACTOR, the git user's email, or the login name."""
    if explicit:
        return explicit
    if os.environ.get("MLSPEC_ACTOR"):
        return os.environ["MLSPEC_ACTOR"]
    if root is not None:
        try:
            import git

            email = git.Repo(root, search_parent_directories=True).config_reader().get_value("user", "email", "")
            if email:
                return str(email)
        except Exception:  # no repository or no identity configured
            pass
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
