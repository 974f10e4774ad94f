"""Write a rendered tree: atomic per file, unchanged files untouched, stale files of the last render removed.

Only files the previous manifest.json listed are ever deleted, so nothing a person
put in the output folder is lost.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from mlspec.atomic import atomic_write
from mlspec.render.base import Artifact
from mlspec.render.engine import MANIFEST


@dataclass(frozen=True)
class WriteSummary:
    """What writing changed on disk."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]


def inside(relative: str) -> str | None:
    """``relative`` normalised, or None when it is absolute or climbs out of its folder."""
    normal = os.path.normpath(relative)
    if os.path.isabs(normal) or normal.split(os.sep, 1)[0] == "..":
        return None
    return normal


def _previous(directory: Path) -> set[str]:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return {entry["path"] for entry in manifest.get("artifacts", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def write_tree(directory: Path, artifacts: tuple[Artifact, ...]) -> WriteSummary:
    """Write ``artifacts`` under ``directory``; manifest.json goes last, so a crash leaves the old one valid."""
    previous = _previous(directory)
    written, unchanged = [], []
    ordered = sorted(artifacts, key=lambda a: a.path == MANIFEST)
    for artifact in ordered:
        normal = inside(artifact.path)
        if normal is None:
            raise RuntimeError(f"artifact path escapes the output folder: {artifact.path}")
        target = directory / normal
        if target.is_file() and target.read_bytes() == artifact.content:
            unchanged.append(artifact.path)
            continue
        atomic_write(target, artifact.content)
        written.append(artifact.path)
    current = {a.path for a in artifacts}
    # a manifest entry pointing outside the folder is never acted on
    removed = sorted(p for p in previous - current if inside(p) is not None)
    for stale in removed:
        (directory / stale).unlink(missing_ok=True)
    return WriteSummary(tuple(written), tuple(unchanged), tuple(removed))
