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


def revision(root: Path, own: tuple[Path, ...] = ()) -> Revision:
    """The project's git revision; ``unversioned`` outside a git repository.

    Untracked files under ``own`` (mlspec's state, caches and outputs) and any
    ``.mlspec`` folder do not make the tree dirty, whether git ignores them or not.
    """
    try:
        import git

        repo = git.Repo(root, search_parent_directories=True)
        commit = repo.head.commit.hexsha
        top = Path(str(repo.working_tree_dir)).resolve()
        mine = [p.resolve() for p in own]
        untracked = [
            p
            for p in repo.untracked_files
            if ".mlspec" not in p.split("/") and not any((top / p).is_relative_to(m) for m in mine)
        ]
        return Revision(commit, repo.is_dirty(untracked_files=False) or bool(untracked))
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
