"""What ``mlspec doctor`` asks of the project it runs in (the installation itself is :mod:`mlspec.doctor`)."""

from __future__ import annotations

from pathlib import Path


def project_durability_warnings(path: Path | None) -> list[str]:
    """Where the state or audit trail of the project at or above ``path`` (the current folder) could be lost; none
    outside a project. Nothing but the project file is read, and only inside a project (no engine is imported)."""
    from mlspec.load.discovery import find_project_root

    if find_project_root(path or Path.cwd()) is None:
        return []
    from mlspec.app.project import Project

    return Project.open(path or Path.cwd()).durability_warnings()
