"""Run the renderers over one environment and list what they made in manifest.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlspec.diagnostics import Diagnostic
from mlspec.render.base import Artifact, RenderContext
from mlspec.render.endpoint_auth import auth_problems
from mlspec.render.refused import refusals
from mlspec.render.registry import RENDERERS, load_renderer
from mlspec.resolve.graph import ResolvedGraph

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RenderResult:
    """Every artifact of one environment (manifest.json last) and the problems found while rendering."""

    environment: str
    artifacts: tuple[Artifact, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """True when no renderer reported an error."""
        return not any(d.severity == "error" for d in self.diagnostics)


def render_environment(
    graph: ResolvedGraph, context: RenderContext, targets: Sequence[str] | None = None
) -> RenderResult:
    """Render ``graph`` with every renderer (or the named ``targets``), then add the manifest.

    Spec fields that no target honours (:mod:`mlspec.render.refused`) are ``unsupported-by-target`` errors here,
    whichever targets are rendered.
    """
    artifacts: list[Artifact] = []
    diagnostics: list[Diagnostic] = refusals(graph)  # fields no target honours, whichever targets render
    diagnostics += auth_problems(graph)  # authentication the environment's targets could not enforce
    for name in targets or list(RENDERERS):
        output = load_renderer(name).render(graph, context)
        artifacts.extend(output.artifacts)
        diagnostics.extend(output.diagnostics)
    paths = [a.path for a in artifacts]
    duplicated = sorted({p for p in paths if paths.count(p) > 1})
    if duplicated:  # two renderers writing one file is a bug in mlspec, not a user error
        raise RuntimeError(f"renderers wrote the same path twice: {duplicated}")
    artifacts.sort(key=lambda a: a.path)
    artifacts.append(_manifest(graph, context, artifacts))
    return RenderResult(graph.name, tuple(artifacts), tuple(sorted(diagnostics, key=Diagnostic.sort_key)))


def with_artifacts(
    result: RenderResult, replaced: Mapping[str, Artifact | None], diagnostics: Sequence[Diagnostic] = ()
) -> RenderResult:
    """``result`` with the files in ``replaced`` swapped (None removes one), manifest.json listing the new bytes,
    and ``diagnostics`` added (a step after rendering, such as pinning model versions for the GitOps hand-off)."""
    manifest = next(a for a in result.artifacts if a.path == MANIFEST)
    header = {k: v for k, v in json.loads(manifest.content).items() if k != "artifacts"}
    artifacts = [replaced.get(a.path, a) for a in result.artifacts if a.path != MANIFEST]
    kept = [a for a in artifacts if a is not None]
    problems = sorted([*result.diagnostics, *diagnostics], key=Diagnostic.sort_key)
    return RenderResult(result.environment, (*kept, _manifest_of(header, kept)), tuple(problems))


def _manifest(graph: ResolvedGraph, context: RenderContext, artifacts: list[Artifact]) -> Artifact:
    header = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "mlspec_version": context.mlspec_version,
        "project": context.project,
        "environment": graph.name,
    }
    return _manifest_of(header, artifacts)


def _manifest_of(header: dict[str, Any], artifacts: list[Artifact]) -> Artifact:
    # One artifact per line: diff-friendly, and fast (json's C encoder runs only without indent).
    entries = [
        json.dumps(
            {
                "path": a.path,
                "sha256": a.sha256,
                "bytes": len(a.content),
                "target": a.target,
                "sources": list(a.sources),
            },
            sort_keys=True,
        )
        for a in artifacts
    ]
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in header.items()]
    body = ",\n".join(f"    {entry}" for entry in entries)
    text = "{\n" + "\n".join(lines) + '\n  "artifacts": [\n' + body + "\n  ]\n}\n"
    return Artifact(MANIFEST, text.encode(), "manifest", ())
