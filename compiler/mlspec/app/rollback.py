"""The project as it was at a git revision (a rollback's specs), sharing the current state, caches and outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import MlspecError

if TYPE_CHECKING:
    from mlspec.app.project import Project


@contextlib.contextmanager
def project_at(project: Project, revision: str) -> Iterator[Project]:
    """The project as it was at a git revision, sharing the current state, caches and outputs (for rollback)."""
    with tempfile.TemporaryDirectory(prefix="mlspec-rollback-") as tmp:
        try:
            archive = subprocess.run(
                ["git", "-C", str(project.root), "archive", "--format=tar", revision],
                capture_output=True, check=True, timeout=120,
            )  # fmt: skip
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            detail = (
                exc.stderr.decode(errors="replace").strip()
                if isinstance(exc, subprocess.CalledProcessError)
                else str(exc)
            )
            raise MlspecError(
                f"cannot read revision '{revision}': {detail}", hint="give a commit, tag or branch"
            ) from None
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        prefix = Path(tmp) / project.root.relative_to(_git_root(project.root))
        # the old specs, but the current project's state, caches and outputs
        yield dataclasses.replace(type(project).open(prefix), state_root=project.home)


def _git_root(path: Path) -> Path:
    out = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip()).resolve()


def resolve_revision(root: Path, revision: str) -> str:
    """The commit ``revision`` names in the repository at ``root`` (``revision`` itself when git cannot say)."""
    out = subprocess.run(["git", "-C", str(root), "rev-parse", revision], capture_output=True, text=True, check=False)
    return out.stdout.strip() or revision
