"""Finding the project root and the YAML files that belong to it."""

from __future__ import annotations

import os
from pathlib import Path

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


def display_path(path: Path) -> str:
    """A path as users should see it: relative to the working directory when inside it."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
