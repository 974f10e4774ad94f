"""MLflow: the registry actions an environment needs, as data (registered models, aliases, tags, experiments)."""

from __future__ import annotations

from typing import Any, ClassVar

from mlspec.diagnostics import Diagnostic
from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.serialize import to_json
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.object_store import mlflow_artifact_root
from mlspec.spec.datasource import DataSource
from mlspec.spec.deployment import AbRollout, Deployment, OnlineDeploymentSpec, ShadowRollout
from mlspec.spec.training import TrainingPipeline

SCHEMA_VERSION = 1
PUBLISHED_SCHEMES = ("azure", "s3", "file")  # where the register step writes versions (runtime/object_store.py)
_RANK = {"public": 0, "internal": 1, "confidential": 2, "pii": 3}


def data_classification(graph: ResolvedGraph, pipeline_ref: str) -> str:
    """The most sensitive classification among the sources a pipeline depends on, directly or not."""
    levels = [
        source.model.spec.classification
        for ref in graph.upstream(pipeline_ref)
        if (source := graph.typed(DataSource, ref)) is not None
    ]
    return max(levels, key=_RANK.__getitem__, default="public")


def _unpublishable_store(graph: ResolvedGraph, uri: str) -> Diagnostic:
    """The register step writes registered versions only to Azure Blob, S3 or a folder."""
    return Diagnostic(
        "unsupported-by-target",
        f"environment '{graph.name}' names artifact store {uri}; mlspec publishes registered models to "
        "azure://, s3:// or file:// stores only",
        graph.environment.document.locate(("spec", "targets", "registry", "artifact_store")),
        path="spec.targets.registry.artifact_store",
        hint="use azure://<account>/<container> or s3://<bucket> with the store's region",
    )


class MlflowRenderer:
    """Renders ``mlflow/registry.json``: what the registry must hold for this environment."""

    name: ClassVar[str] = "mlflow"
    version: ClassVar[str] = "2"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """Registered models, their aliases and tags, experiments, and what each deployment serves."""
        store = graph.env.spec.targets.registry.artifact_store
        if store is not None and store.uri.split("://", 1)[0] not in PUBLISHED_SCHEMES:
            return RenderOutput(diagnostics=[_unpublishable_store(graph, store.uri)])
        specs = [*graph.of_kind("TrainingPipeline"), *graph.of_kind("Deployment")]
        key = [graph.environment.digest, *(graph.fingerprint(s.ref) for s in specs)]
        files = reuse(
            context,
            f"{self.name}/{self.version}",
            key,
            lambda: {"mlflow/registry.json": to_json(self._document(graph, context))},
        )
        return RenderOutput(
            [Artifact("mlflow/registry.json", files["mlflow/registry.json"], self.name, tuple(s.ref for s in specs))]
        )

    def _document(self, graph: ResolvedGraph, context: RenderContext) -> dict[str, Any]:
        registry = graph.env.spec.targets.registry
        store = registry.artifact_store
        models: list[dict[str, Any]] = []
        for spec in graph.specs(TrainingPipeline):
            pipeline = spec.model
            registration = pipeline.spec.registration
            aliases = sorted({registration.alias, *([registration.promote_to] if registration.promote_to else [])})
            models.append(
                {
                    "name": pipeline.model_name,
                    "description": pipeline.metadata.description or "",
                    "pipeline": spec.ref,
                    "experiment": f"{context.project}/{graph.name}/{pipeline.metadata.name}",
                    "aliases": aliases,
                    "tags": {
                        **registration.tags,
                        "mlspec.owner": pipeline.metadata.owner or "",
                        "mlspec.environment": graph.name,
                        "mlspec.data_classification": data_classification(graph, spec.ref),
                        "mlspec.task": pipeline.spec.model.task,
                    },
                    "gates": pipeline.spec.evaluation.gates,
                }
            )
        served: list[dict[str, Any]] = []
        for served_spec in graph.specs(Deployment):
            deployment = served_spec.model
            rollout = deployment.spec.rollout if isinstance(deployment.spec, OnlineDeploymentSpec) else None
            served_aliases = {deployment.spec.model.alias or "champion"}
            if isinstance(rollout, AbRollout):
                served_aliases |= {v.alias for v in rollout.variants}
            elif isinstance(rollout, ShadowRollout):
                served_aliases.add(rollout.challenger)
            served.append(
                {
                    "deployment": served_spec.name,
                    "model": deployment.spec.model.name,
                    "aliases": sorted(served_aliases),
                    "version": deployment.spec.model.version,
                }
            )
        document = {
            "schema_version": SCHEMA_VERSION,
            "environment": graph.name,
            "tracking_uri": registry.tracking_uri or "embedded-sqlite",
            "artifact_store": store.uri if store else None,
            # MLflow's run artifacts and the registered versions' immutable folders, both in the store
            "artifact_root": mlflow_artifact_root(store.uri) if store else None,
            "model_layout": "models/<model>/versions/<version>/{model.onnx,model.sha256,manifest.json}"
            if store
            else None,
            "registered_models": models,
            "deployments": served,
        }
        return document
