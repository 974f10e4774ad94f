"""The GitOps hand-off's pins: what Argo CD syncs names the exact model version every InferenceService serves.

``mlspec apply --direct`` pins each InferenceService as it applies it (:mod:`mlspec.targets.cluster.model_pins`).
In GitOps mode nothing applies but Argo CD, so the hand-off render (``mlspec render --pin``) does the same before
the files are committed: each served alias is looked up in the environment's registry and the object gets the
version's ``storageUri``, number and sha256. The pinned files are what the GitOps repository records, so git
says which version runs where, and a new champion reaches the cluster as a commit (the scheduled hand-off in the
GitHub workflow re-pins after training moves an alias).

A model with no version at all yet (the first sync of an environment, before its synced pipelines have trained
anything) leaves its InferenceServices out with a warning; they appear in the hand-off after the first run. Any
other failure (an alias missing while versions exist, a version never published to the store, the registry
unreachable) is an error and nothing is written: a partial hand-off would make Argo CD prune a live endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlspec.diagnostics import Diagnostic
from mlspec.render.base import Artifact
from mlspec.render.engine import RenderResult, with_artifacts
from mlspec.render.serialize import to_yaml_documents
from mlspec.spec.deployment import Deployment

if TYPE_CHECKING:
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.targets.cluster.model_pins import Unpinned, VersionLookup


def pin_render(result: RenderResult, graph: ResolvedGraph, registry: VersionLookup | None) -> RenderResult:
    """``result`` with every InferenceService pinned to its exact version (or left out while its model has none
    yet), the manifest updated, and a diagnostic per InferenceService that was not pinned."""
    from mlspec.targets.cluster.kubernetes import load_manifests
    from mlspec.targets.cluster.model_pins import pin_or_wait
    from mlspec.targets.cluster.platform import kubernetes_paths

    replaced: dict[str, Artifact | None] = {}
    unpinned: list[Unpinned] = []
    by_path = {a.path: a for a in result.artifacts}
    for path in kubernetes_paths(by_path):
        artifact = by_path[path]
        objects = load_manifests(artifact.content)
        if not any(o.get("kind") == "InferenceService" for o in objects):
            continue
        kept, missed = pin_or_wait(objects, registry)
        unpinned += missed
        content = to_yaml_documents(kept) if kept else None
        replaced[path] = Artifact(path, content, artifact.target, artifact.sources) if content else None
    return with_artifacts(result, replaced, [_diagnostic(graph, u) for u in unpinned])


def _diagnostic(graph: ResolvedGraph, unpinned: Unpinned) -> Diagnostic:
    spec = graph.find(Deployment, unpinned.deployment)
    location = spec.document.locate(("spec", "model")) if spec is not None else graph.environment.document.locate(())
    if unpinned.waiting:
        return Diagnostic(
            "model-not-trained-yet",
            f"InferenceService '{unpinned.name}' is left out of this hand-off: {unpinned.reason}",
            location,
            severity="warning",
            path="spec.model",
            hint="it is handed off pinned once a pipeline run of this environment registers a version",
        )
    return Diagnostic(
        "unpinnable-model",
        f"InferenceService '{unpinned.name}' cannot be pinned to a model version: {unpinned.reason}",
        location,
        path="spec.model",
        hint="fix the registry (train, publish or promote a version) and hand off again; nothing was written",
    )
