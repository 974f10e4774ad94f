"""Finding the project root and the YAML files that belong to it."""

from __future__ import annotations

import os
from pathlib import Path

from mlspec.diagnostics import Diagnostic, Location

PROJECT_FILE = "mlspec.yaml"
YAML_SUFFIXES = (".yaml", ".yml")


def find_project_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds mlspec.yaml."""
    current = start.resolve()
    if current.is_file():
        current = current.parent
    for candidate in (current, *current.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    return None


def yaml_files(root: Path) -> list[Path]:
    """Every YAML file below ``root`` (hidden folders skipped), in a stable order."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames) if name.endswith(YAML_SUFFIXES))
    return found


def inside(root: Path, path: str | Path) -> Path | None:
    """Where ``path`` (relative to ``root``, or absolute) leads, symlinks followed, when that is inside the
    project; None when it leaves it."""
    real_root = root.resolve()
    target = (root / path).resolve()
    return target if target == real_root or target.is_relative_to(real_root) else None


def files_inside(root: Path, files: list[Path]) -> tuple[list[Path], list[Diagnostic]]:
    """The files that stay inside the project, and an error for each link out (refused unread: nothing of it
    is ever shown)."""
    kept: list[Path] = []
    problems: list[Diagnostic] = []
    for file in files:
        if inside(root, file) is not None:
            kept.append(file)
            continue
        shown = display_path(file)
        problems.append(
            Diagnostic(
                "outside-project",
                f"{shown} is a link to {file.resolve()}, outside the project: not read",
                Location(shown),
                hint="spec files live inside the project; copy the file in instead of linking to it",
            )
        )
    return kept, problems


def display_path(path: Path) -> str:
    """A path as users should see it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
