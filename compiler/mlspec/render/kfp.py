"""Kubeflow Pipelines v2 YAML per TrainingPipeline, compiled by the kfp SDK's own compiler.

Each pipeline runs fetch-features -> train -> evaluate (gates) -> export-onnx ->
register. The train step carries CPU and memory requests, the GPU type and count
(with tolerations), spot placement, and caching. A GPU pipeline with ``fallback:
cpu`` also gets a CPU variant. Schedules are not part of the KFP IR: they go to
``kfp/<name>.schedule.json`` for the KFP server target to create recurring runs.
Compiles are cached by content hash (they cost ~15 ms each).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from mlspec.render.base import Artifact, RenderContext, RenderOutput
from mlspec.render.serialize import to_json
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.training import TrainingPipeline


def pipeline_inputs(pipeline: TrainingPipeline, *, gpu: bool) -> dict[str, Any]:
    """Everything that shapes one compiled pipeline, as plain data (also the cache key)."""
    spec = pipeline.spec
    resources = spec.resources
    use_gpu = gpu and resources.gpu is not None
    return {
        "name": pipeline.metadata.name + ("" if gpu or resources.gpu is None else "-cpu"),
        "description": pipeline.metadata.description or f"Train and register {pipeline.model_name}",
        "model_name": pipeline.model_name,
        "spec": pipeline.model_dump(mode="json", by_alias=True),
        "epochs": spec.hyperparameters.epochs,
        "learning_rate": spec.hyperparameters.learning_rate,
        "batch_size": spec.hyperparameters.batch_size,
        "test_fraction": spec.evaluation.test_fraction,
        "gates": spec.evaluation.gates,
        "alias": spec.registration.alias,
        "cpu": str(resources.cpu),
        "memory": resources.memory,
        "gpu": {"type": resources.gpu.type, "count": resources.gpu.count} if use_gpu and resources.gpu else None,
        "spot": resources.spot,
        "caching": spec.caching,
    }


def _compile(inputs: dict[str, Any]) -> bytes:
    from mlspec.render.kfp_components import compile_pipeline  # imports kfp: only when compiling

    return compile_pipeline(inputs)


class KfpRenderer:
    """Renders ``kfp/<pipeline>.yaml`` (and ``-cpu`` variants and schedules) for every TrainingPipeline."""

    name: ClassVar[str] = "kfp"
    version: ClassVar[str] = "1"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """Compile every pipeline of the environment."""
        out = RenderOutput()
        for spec in graph.of_kind("TrainingPipeline"):
            pipeline = spec.model
            assert isinstance(pipeline, TrainingPipeline)
            variants = [True] + (
                [False] if pipeline.spec.resources.gpu and pipeline.spec.resources.gpu.fallback == "cpu" else []
            )
            for gpu in variants:
                inputs = pipeline_inputs(pipeline, gpu=gpu)
                namespace = f"kfp/{self.version}/{context.mlspec_version}"
                content = (
                    context.cache.get_or_build(namespace, inputs, functools.partial(_compile, inputs))
                    if context.cache
                    else _compile(inputs)
                )
                out.artifacts.append(Artifact(f"kfp/{inputs['name']}.yaml", content, self.name, (spec.ref,)))
            if pipeline.spec.schedule:
                schedule = {
                    "pipeline": spec.name,
                    "cron": pipeline.spec.schedule,
                    "max_concurrency": 1,
                    "no_catchup": True,
                    "parameters": {"environment": graph.name},
                }
                out.artifacts.append(
                    Artifact(f"kfp/{spec.name}.schedule.json", to_json(schedule), self.name, (spec.ref,))
                )
        return out
