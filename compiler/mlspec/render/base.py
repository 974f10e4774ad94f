"""The render stage's data: Artifact, RenderContext, RenderOutput, and the Renderer interface.

A renderer turns one environment's resolved graph into files a real tool reads.
Adding a target (Seldon, SageMaker, ...) means adding one module with a class
that satisfies ``Renderer`` and naming it in ``mlspec.render.registry``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from mlspec.diagnostics import Diagnostic

if TYPE_CHECKING:
    from mlspec.render.cache import RenderCache
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.spec.environment import Environment
    from mlspec.spec.validate import ParsedSpec


@dataclass(frozen=True, slots=True)
class Artifact:
    """One rendered file: where it goes (relative, POSIX), its exact bytes, and the specs it came from."""

    path: str
    content: bytes
    target: str
    sources: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        """Content hash, as listed in manifest.json."""
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class RenderContext:
    """What renderers may know besides the graph."""

    project: str
    project_root: Path
    mlspec_version: str
    environments: tuple[ParsedSpec[Environment], ...] = ()
    cache: RenderCache | None = None


def reuse(
    context: RenderContext, namespace: str, key: list[str], build: Callable[[], dict[str, bytes]]
) -> dict[str, bytes]:
    """Files (path -> bytes) for ``key`` from the cache, or ``build()``'s, stored for next time.

    ``key`` must name every input the files depend on: graph fingerprints, the
    environment's digest, the project name; ``namespace`` the renderer and its version.
    """
    if context.cache is None:
        return build()
    full_key = [context.mlspec_version, context.project, *key]

    def encode() -> bytes:
        return json.dumps({path: content.decode() for path, content in build().items()}, sort_keys=True).encode()

    stored = json.loads(context.cache.get_or_build(namespace, full_key, encode))
    return {path: text.encode() for path, text in stored.items()}


@dataclass
class RenderOutput:
    """A renderer's artifacts and the problems it found (a field its target cannot honour, say)."""

    artifacts: list[Artifact] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class Renderer(Protocol):
    """A target's renderer. ``name`` is its folder in the rendered tree; bump ``version`` when output changes."""

    name: ClassVar[str]
    version: ClassVar[str]

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """Render every artifact this target needs for the environment."""
        ...
