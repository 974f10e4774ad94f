"""The project as it was at a git revision (a rollback's specs), sharing the current state, caches and outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import MlspecError
from mlspec.git.runner import Git, GitError

if TYPE_CHECKING:
    from mlspec.app.project import Project


@contextlib.contextmanager
def project_at(project: Project, revision: str) -> Iterator[Project]:
    """The project as it was at a git revision, sharing the current state, caches and outputs (for rollback)."""
    git = Git(project.root)
    with tempfile.TemporaryDirectory(prefix="mlspec-rollback-") as tmp:
        try:
            archive = git.archive(revision)
            top = git.toplevel()
        except GitError as exc:
            raise MlspecError(
                f"cannot read revision '{revision}': {exc.stderr.strip() or exc.message}",
                hint="give a commit, tag or branch",
            ) from None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        prefix = Path(tmp) / project.root.resolve().relative_to(top)
        # the old specs, but the current project's state, caches and outputs
        yield dataclasses.replace(type(project).open(prefix), state_root=project.home)


def resolve_revision(root: Path, revision: str) -> str:
    """The commit ``revision`` names in the repository at ``root`` (``revision`` itself when git cannot say)."""
    return Git(root).run("rev-parse", revision).stdout.strip() or revision
