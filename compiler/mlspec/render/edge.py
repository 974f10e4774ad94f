"""Edge: per ``mode: edge`` Deployment, the build descriptor a CI job (or the local engine) builds its package from.

``edge/<deployment>.json`` names the model (alias or pinned version, and the pipeline
that trains it), the quantization and the accuracy it must keep (on which metrics of
which test split), the signing key by REFERENCE only, and the input features (name,
dtype, view) of the FeatureService in the model's column order. No key material and
no secret ever appears in it.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from mlspec.diagnostics import Diagnostic
from mlspec.edge.errors import SigningKeyError
from mlspec.edge.signing import default_signing_ref
from mlspec.edge.verify import FORMAT
from mlspec.edge.verify import SCHEMA_VERSION as PACKAGE_SCHEMA_VERSION
from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.monitoring import service_features
from mlspec.render.serialize import to_json
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.refs import SpecIndex
from mlspec.spec.deployment import Deployment, EdgeDeploymentSpec
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec

SCHEMA_VERSION = 1


def primary_metric(pipeline: TrainingPipeline) -> str:
    """The metric a pipeline ranks models by: its search metric, else its first evaluation metric."""
    if pipeline.spec.search is not None:
        return pipeline.spec.search.metric
    return pipeline.spec.evaluation.metrics[0] if pipeline.spec.evaluation.metrics else "auc"


def checked_metrics(pipeline: TrainingPipeline) -> tuple[str, ...]:
    """The metrics the quantized model is judged on: the pipeline's gate metrics and its primary metric."""
    metrics = list(pipeline.spec.evaluation.gates)
    primary = primary_metric(pipeline)
    return tuple(metrics if primary in metrics else [*metrics, primary])


def signing_key(deployment: EdgeDeploymentSpec, graph: ResolvedGraph) -> str:
    """The signing key reference: ``edge.signing_key``, else the environment's file key + ``.ed25519``;
    SigningKeyError (saying what to set) when there is neither."""
    if deployment.edge.signing_key:
        return deployment.edge.signing_key
    encryption = graph.env.spec.encryption
    return default_signing_ref(encryption.kms_key, graph.name, encryption.signing_key)


class EdgeRenderer:
    """Renders ``edge/<deployment>.json`` for every ``mode: edge`` Deployment."""

    name: ClassVar[str] = "edge"
    version: ClassVar[str] = "1"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """One build descriptor per edge Deployment; an error when its signing key cannot be named."""
        out = RenderOutput()
        index = SpecIndex(graph.resources.values())
        for spec in graph.specs(Deployment):
            deployment = spec.model.spec
            if not isinstance(deployment, EdgeDeploymentSpec):
                continue
            try:
                signing_key(deployment, graph)
            except SigningKeyError as exc:
                out.diagnostics.append(
                    Diagnostic(
                        "missing-field",
                        str(exc),
                        spec.document.locate(("spec", "edge")),
                        path="spec.edge.signing_key",
                        hint="set the environment's spec.encryption.signing_key, or spec.edge.signing_key (kms:// or file://)",
                    )
                )
                continue
            pipeline = index.models.get(deployment.model.name)
            path = f"edge/{spec.name}.json"
            key = [
                graph.environment.digest,
                graph.fingerprint(spec.ref),
                graph.fingerprint(pipeline.ref) if pipeline else "",
            ]
            build = functools.partial(self._files, path, graph, spec, deployment, pipeline)
            files = reuse(context, f"{self.name}/{self.version}", key, build)
            sources = (spec.ref, *([pipeline.ref] if pipeline else []), graph.environment.ref)
            out.artifacts.append(Artifact(path, files[path], self.name, sources))
        return out

    def _files(
        self,
        path: str,
        graph: ResolvedGraph,
        spec: ParsedSpec,
        deployment: EdgeDeploymentSpec,
        pipeline: ParsedSpec[TrainingPipeline] | None,
    ) -> dict[str, bytes]:
        return {path: to_json(self._document(graph, spec, deployment, pipeline))}

    def _document(
        self,
        graph: ResolvedGraph,
        spec: ParsedSpec,
        deployment: EdgeDeploymentSpec,
        pipeline: ParsedSpec[TrainingPipeline] | None,
    ) -> dict[str, Any]:
        edge = deployment.edge
        trainer = pipeline.model if pipeline is not None else None
        service = deployment.features or (trainer.spec.features if trainer else None)
        features = service_features(graph, service) if service else []
        data_dir = graph.env.spec.data_dir or f".mlspec/{graph.name}"
        model = deployment.model
        return {
            "schema_version": SCHEMA_VERSION,
            "environment": graph.name,
            "deployment": spec.name,
            "model": {
                "name": model.name,
                "alias": None if model.version else model.alias,
                "version": model.version,
                "training_pipeline": pipeline.ref if pipeline else None,
                "task": trainer.spec.model.task if trainer else None,
                "format": "onnx",
            },
            "features": {
                "service": service,
                "inputs": features,
                "tensor": {"name": "input", "dtype": "float32", "shape": ["batch", len(features)]},
            },
            "output": {"name": "score", "dtype": "float32"},
            "quantize": edge.quantize,
            "accuracy_check": {
                "max_accuracy_drop": edge.max_accuracy_drop,
                "metrics": list(checked_metrics(trainer)) if trainer else [],
                "split": "test",
                "test_fraction": trainer.spec.evaluation.test_fraction if trainer else None,
            }
            if edge.quantize != "none"
            else None,
            "signing": {"algorithm": "Ed25519", "key": signing_key(deployment, graph)},
            "package": {
                "format": FORMAT,
                "schema_version": PACKAGE_SCHEMA_VERSION,
                "path": f"{data_dir}/edge/{spec.name}",
            },
        }
