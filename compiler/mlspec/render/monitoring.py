"""Monitoring: per Deployment, what Evidently compares (reference data, features), how, and what to do on drift."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.serialize import to_json
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.refs import SpecIndex
from mlspec.spec.base import duration_seconds
from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec

SCHEMA_VERSION = 1


def service_features(graph: ResolvedGraph, service_name: str) -> list[dict[str, str]]:
    """The features a FeatureService selects, with view and dtype, in declaration order."""
    service = graph.find(FeatureService, service_name)
    if service is None:
        return []
    features: list[dict[str, str]] = []
    for selection in service.model.spec.features:
        view = graph.require(FeatureView, selection.view).model
        wanted = set(selection.fields) if selection.fields is not None else None
        features.extend(
            {"view": selection.view, "name": f.name, "dtype": f.dtype}
            for f in view.spec.features
            if wanted is None or f.name in wanted
        )
    return features


class MonitoringRenderer:
    """Renders ``monitoring/<deployment>.json`` for every Deployment with drift monitoring."""

    name: ClassVar[str] = "monitoring"
    version: ClassVar[str] = "1"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """One monitoring configuration per monitored Deployment."""
        out = RenderOutput()
        index = SpecIndex(graph.resources.values())
        for spec in graph.specs(Deployment):
            online = spec.model.spec
            if not isinstance(online, OnlineDeploymentSpec) or online.monitoring.drift is None:
                continue  # batch and edge Deployments serve no requests to watch
            pipeline = index.models.get(online.model.name)
            path = f"monitoring/{spec.name}.json"
            key = [
                graph.environment.digest,
                graph.fingerprint(spec.ref),
                graph.fingerprint(pipeline.ref) if pipeline else "",
            ]
            build = functools.partial(self._files, path, graph, spec, online, pipeline)
            files = reuse(context, f"{self.name}/{self.version}", key, build)
            sources = (spec.ref, *([pipeline.ref] if pipeline else []))
            out.artifacts.append(Artifact(path, files[path], self.name, sources))
        return out

    def _files(
        self,
        path: str,
        graph: ResolvedGraph,
        spec: ParsedSpec,
        online: OnlineDeploymentSpec,
        pipeline: ParsedSpec[TrainingPipeline] | None,
    ) -> dict[str, bytes]:
        return {path: to_json(self._document(graph, spec, online, pipeline))}

    def _document(
        self,
        graph: ResolvedGraph,
        spec: ParsedSpec,
        online: OnlineDeploymentSpec,
        pipeline: ParsedSpec[TrainingPipeline] | None,
    ) -> dict[str, Any]:
        drift = online.monitoring.drift
        assert drift is not None
        service_name = online.features or (pipeline.model.spec.features if pipeline else None)
        features = service_features(graph, service_name) if service_name else []
        if drift.features is not None:
            features = [f for f in features if f["name"] in set(drift.features)]
        data_dir = graph.env.spec.data_dir or f".mlspec/{graph.name}"
        return {
            "schema_version": SCHEMA_VERSION,
            "environment": graph.name,
            "deployment": spec.name,
            "model": online.model.name,
            "reference": {
                "feature_service": service_name,
                "training_pipeline": pipeline.ref if pipeline else None,
                "dataset": f"{data_dir}/datasets/{online.model.name}/reference.parquet",
            },
            "current": {"request_log": f"{data_dir}/requests/{spec.name}", "sample_rate": drift.sample_rate},
            "features": features,
            "drift": {
                "method": drift.method,
                "evidently_stattest": drift.method,
                "threshold": drift.threshold,
                "schedule_seconds": duration_seconds(drift.schedule),
            },
            "action": {
                "on_drift": drift.action,
                "retrain": pipeline.ref if drift.action == "retrain" and pipeline else None,
            },
        }
