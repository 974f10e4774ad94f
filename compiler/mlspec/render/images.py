"""Which container image a rendered resource runs: the runtime (pipelines, Feast jobs) or the serving image.

``mlspec image build`` records every image it builds in ``images.lock.json`` at the project root
(registry, role, name, content tag, manifest digest, size, SBOM). Renders read that record and name
images by digest (``registry/name@sha256:...``), never by a tag that can move.

An environment names its registry in ``targets.images.registry``. When the record has no image of a
role for that registry, :func:`image_reference` raises :class:`ImageNotBuilt`, whose message says to run
``mlspec image build --push <registry>``: a cluster render with a floating or guessed image would run
something nobody built from this commit, so there is no silent default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mlspec.diagnostics import Diagnostic
from mlspec.errors import MlspecError
from mlspec.load.discovery import PROJECT_FILE, find_project_root
from mlspec.resolve.graph import ResolvedGraph

Role = Literal["runtime", "serving"]
RECORD_FILE = "images.lock.json"
_PINNED_IMAGE = re.compile(rb"""\bimage:\s*['"]?([^\s'"]+@sha256:[0-9a-f]{64})""")
IMAGE_NAMES: dict[str, str] = {"runtime": "mlspec-runtime", "serving": "mlspec-serving"}


@dataclass(frozen=True, slots=True)
class RecordedImage:
    """One built image as ``mlspec image build`` recorded it."""

    registry: str
    role: str
    name: str
    tag: str
    digest: str
    image_id: str
    size: int
    sbom: str

    @property
    def reference(self) -> str:
        """``registry/name@sha256:...``: the image by content, as renders name it."""
        return f"{self.registry}/{self.name}@{self.digest}"


class ImageNotBuilt(MlspecError):
    """No image of a role is recorded for the environment's registry; ``registry`` and ``role`` say which."""

    def __init__(self, environment: str, registry: str | None, role: str) -> None:
        if registry is None:
            message = f"environment '{environment}' runs on a cluster but names no image registry"
            hint = "add targets.images.registry (e.g. registry.example.com/ml), then run `mlspec image build --push`"
        else:
            message = f"no {role} image is recorded for registry {registry} in {RECORD_FILE}"
            hint = f"run `mlspec image build --push {registry}` and commit {RECORD_FILE}"
        super().__init__(message, hint=hint)
        self.environment = environment
        self.registry = registry
        self.role = role


def read_record(root: Path) -> list[RecordedImage]:
    """Every image recorded in ``root/images.lock.json`` (none when the file is absent)."""
    path = root / RECORD_FILE
    if not path.is_file():
        return []
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return [RecordedImage(**entry) for entry in data.get("images", [])]


def find_image(records: list[RecordedImage], registry: str, role: str) -> RecordedImage | None:
    """The image of ``role`` recorded for ``registry``, if any."""
    for image in records:
        if image.registry == registry.rstrip("/") and image.role == role:
            return image
    return None


def environment_registry(graph: ResolvedGraph) -> str | None:
    """The registry the environment's images come from (``targets.images.registry``), if it names one."""
    images = graph.env.spec.targets.images
    return images.registry.rstrip("/") if images is not None else None


def project_root_of(graph: ResolvedGraph) -> Path | None:
    """The project the environment's spec was loaded from (its file's folder or a parent with mlspec.yaml)."""
    start = Path(graph.environment.document.file).resolve().parent
    root = find_project_root(start)
    return root if root is not None and (root / PROJECT_FILE).is_file() else None


def image_reference(graph: ResolvedGraph, role: Literal["runtime", "serving"], root: Path | None = None) -> str:
    """The image a resource of ``graph``'s environment runs, by digest: ``registry/name@sha256:...``.

    ``role`` is ``runtime`` (KFP steps, Feast jobs, run-submitting jobs: mlspec with its training
    extras) or ``serving`` (onnxruntime model servers, no torch). The digest comes from
    ``images.lock.json`` at the project root (``root``, else found from the environment's file).
    Raises :class:`ImageNotBuilt` when the environment names no registry or no image of that role is
    recorded for it.
    """
    registry = environment_registry(graph)
    if registry is None:
        raise ImageNotBuilt(graph.name, None, role)
    project = root if root is not None else project_root_of(graph)
    found = find_image(read_record(project), registry, role) if project is not None else None
    if found is None:
        raise ImageNotBuilt(graph.name, registry, role)
    return found.reference


def pinned_images(contents: Iterable[bytes]) -> list[str]:
    """Every image named by digest (``image: ...@sha256:...``) in rendered files, sorted, once each."""
    return sorted({match.decode() for content in contents for match in _PINNED_IMAGE.findall(content)})


def recorded_image(
    graph: ResolvedGraph,
    role: Literal["runtime", "serving"],
    root: Path | None = None,
    unset_at: tuple[str, ...] = ("spec", "targets"),
) -> tuple[str | None, Diagnostic | None]:
    """:func:`image_reference`, or (None, an ``image-not-built`` error at the environment's image registry, or at
    ``unset_at`` (the field that asks for a cluster) when it names none)."""
    try:
        return image_reference(graph, role, root), None
    except ImageNotBuilt as missing:
        document = graph.environment.document
        at = ("spec", "targets", "images", "registry") if missing.registry else unset_at
        problem = Diagnostic(
            "image-not-built",
            f"Environment '{graph.name}': {missing.message}",
            document.locate(at),
            path=".".join(at),
            hint=missing.hint,
        )
        return None, problem
