"""The output-folder target: applies a resource by writing the artifacts it owns into the environment's folder.

This is what a GitOps engine watches (commit the folder) and what the local
platform's real targets build on. Writes are atomic and skipped when the bytes are
already there, so applying twice changes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

from mlspec.atomic import atomic_write
from mlspec.plan.model import Change
from mlspec.render.base import Artifact
from mlspec.render.images import pinned_images
from mlspec.state.model import ResourceState
from mlspec.targets.base import TargetError


class OutputDirTarget:
    """Writes rendered artifacts under one folder per environment."""

    name: ClassVar[str] = "output"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise TargetError(f"artifact path escapes the output folder: {relative}")
        return path

    def plan(self, change: Change, previous: ResourceState | None) -> list[str]:
        """The files applying ``change`` would write or remove."""
        old = set(previous.artifacts) if previous else set()
        if change.action == "delete":
            return [f"remove {p}" for p in sorted(old)]
        steps = [
            f"write {p}"
            for p, sha in sorted(change.artifacts.items())
            if previous is None or previous.artifacts.get(p) != sha or not self._path(p).is_file()
        ]
        return steps + [f"remove {p}" for p in sorted(old - set(change.artifacts))]

    def apply(
        self,
        change: Change,
        artifacts: dict[str, Artifact],
        previous: ResourceState | None,
        keep: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """Write (or, for a delete, remove) the resource's artifacts; files in ``keep`` are never removed."""
        old = (set(previous.artifacts) if previous else set()) - keep
        if change.action == "delete":
            for relative in sorted(old):
                self._path(relative).unlink(missing_ok=True)
            return {}
        for relative, artifact in sorted(artifacts.items()):
            if artifact.sha256 != change.artifacts.get(relative):
                raise TargetError(f"{relative}: rendered content does not match the plan (sha256 differs)")
            path = self._path(relative)
            if not (path.is_file() and path.read_bytes() == artifact.content):
                try:
                    atomic_write(path, artifact.content)
                except OSError as exc:
                    raise TargetError(f"cannot write {path}: {exc.strerror}") from None
        for relative in sorted(old - set(artifacts)):
            self._path(relative).unlink(missing_ok=True)
        ids = {"output": str(self.root)}
        images = pinned_images(a.content for a in artifacts.values())
        if images:  # which image each resource runs, as state records it
            ids["images"] = " ".join(images)
        return ids

    def read_live(self, resource: ResourceState) -> dict[str, str | None]:
        """sha256 of every artifact file the resource owns, None when missing."""
        live: dict[str, str | None] = {}
        for relative in resource.artifacts:
            path = self._path(relative)
            live[relative] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        return live

    def healthy(self, resource: ResourceState) -> bool:
        """Every artifact is present with the applied content."""
        return self.read_live(resource) == resource.artifacts
