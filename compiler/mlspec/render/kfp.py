"""Kubeflow Pipelines v2 YAML per TrainingPipeline, compiled by the kfp SDK's own compiler.

Each pipeline runs fetch-features -> train -> evaluate (gates) -> export-onnx ->
register. The train step carries CPU and memory requests, the GPU type and count
(with tolerations), spot placement, and caching. A GPU pipeline with ``fallback:
cpu`` also gets a CPU variant. Schedules are not part of the KFP IR: they go to
``kfp/<name>.schedule.json`` for the KFP server target to create recurring runs.
Compiles are cached by content hash (they cost ~15 ms each).

Every ``mode: batch`` Deployment gets ``kfp/batch/<name>.yaml``: fetch-entity-features
-> score (``mlspec.runtime.batch``), the score step with the runtime's CPU, memory and
GPU, neither step cached; and ``kfp/batch/<name>.schedule.json`` when it has a schedule.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import multiprocessing
import os
from pathlib import Path
from typing import Any, ClassVar

from mlspec.diagnostics import Diagnostic
from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.images import recorded_image
from mlspec.render.kfp_platform import step_platform
from mlspec.render.secret_refs import secret_source
from mlspec.render.serialize import to_json
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.refs import SpecIndex
from mlspec.runtime.context import reference_variable
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec

# The image named in a local environment's pipelines: they run in-process (the local KFP runner), never pulled.
LOCAL_IMAGE = "mlspec-runtime"

# model.framework -> the train component that trains it (kfp_components.TRAINERS has one per entry).
FRAMEWORKS = {"torch": "mlspec.runtime.steps.train (PyTorch)"}


def pipeline_inputs(
    pipeline: TrainingPipeline, *, gpu: bool, image: str = LOCAL_IMAGE, platform: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything that shapes one compiled pipeline, as plain data (also the cache key); ``platform`` is what its
    steps need from the cluster (:func:`mlspec.render.kfp_platform.step_platform`)."""
    spec = pipeline.spec
    resources = spec.resources
    use_gpu = gpu and resources.gpu is not None
    return {
        "name": pipeline.metadata.name + ("" if gpu or resources.gpu is None else "-cpu"),
        "description": pipeline.metadata.description or f"Train and register {pipeline.model_name}",
        "model_name": pipeline.model_name,
        "framework": spec.model.framework,
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
        "image": image,
        "platform": platform,
    }


def _digest(platform: dict[str, Any] | None) -> str:
    """A short digest of what the steps need from the cluster (it keys the compile cache)."""
    return hashlib.sha256(to_json(platform)).hexdigest()[:12] if platform else "none"


@functools.cache
def _components_digest() -> str:
    """A digest of the component code: compiled pipelines embed it, so it keys the render cache."""
    digest = hashlib.sha256()
    for name in ("kfp_components.py", "kfp_batch.py", "kfp_platform.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def _compile(inputs: dict[str, Any]) -> bytes:
    from mlspec.render.kfp_components import compile_pipeline  # imports kfp: only when compiling

    return compile_pipeline(inputs)


def batch_pipeline_name(deployment: str) -> str:
    """The batch pipeline's name (in the compiled YAML, on the KFP server and in its schedule)."""
    return f"batch-{deployment}"


def batch_feature_service(graph: ResolvedGraph, deployment: Deployment) -> str | None:
    """The FeatureService a Deployment reads: its own ``features``, else its model's TrainingPipeline's."""
    if deployment.spec.features:
        return deployment.spec.features
    found = SpecIndex(graph.resources.values()).models.get(deployment.spec.model.name)
    return found.model.spec.features if found is not None else None


def batch_inputs(
    deployment: Deployment,
    spec: BatchDeploymentSpec,
    feature_service: str,
    image: str = LOCAL_IMAGE,
    platform: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that shapes one compiled batch pipeline (``spec`` is the Deployment's), as plain data."""
    runtime = spec.runtime
    connection = spec.batch.sink.connection
    secret = None
    source = secret_source(connection) if connection else None
    # a k8s:// connection everywhere; a secret:// one where the steps run in a cluster (locally it is a variable)
    if connection and source and (connection.startswith("k8s://") or platform is not None):
        secret = {"name": source[0], "key": source[1], "variable": reference_variable(connection)}
    gpu = None
    if runtime.device == "gpu":
        gpu = {"type": runtime.gpu.type if runtime.gpu else "", "count": runtime.gpu.count if runtime.gpu else 1}
    return {
        "name": batch_pipeline_name(deployment.metadata.name),
        "description": deployment.metadata.description
        or f"Score {spec.batch.entities} with {spec.model.name} into {spec.batch.sink.table or spec.batch.sink.path}",
        "deployment": deployment.model_dump(mode="json", by_alias=True),
        "feature_service": feature_service,
        "cpu": str(runtime.cpu),
        "memory": runtime.memory,
        "gpu": gpu,
        "connection_secret": secret,
        "image": image,
        "platform": platform,
    }


def _compile_batch(inputs: dict[str, Any]) -> bytes:
    from mlspec.render.kfp_batch import compile_batch_pipeline  # imports kfp: only when compiling

    return compile_batch_pipeline(inputs)


# Below this many compiles a process pool costs more than it saves.
POOL_THRESHOLD = 16


def compile_all(jobs: list[dict[str, Any]]) -> list[bytes]:
    """Compile several pipelines, on every core when there are many (each compile is ~20 ms of pure Python)."""
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < POOL_THRESHOLD or workers < 2 or multiprocessing.get_start_method(allow_none=True) == "spawn":
        return [_compile(job) for job in jobs]
    from mlspec.render import kfp_components  # noqa: F401  # import kfp once, before the workers fork

    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_compile, jobs, chunksize=max(1, len(jobs) // (workers * 4))))


def _schedule_file(path: str, pipeline: str, cron: str, environment: str) -> dict[str, bytes]:
    document = {
        "pipeline": pipeline,
        "cron": cron,
        "max_concurrency": 1,
        "no_catchup": True,
        "parameters": {"environment": environment},
    }
    return {path: to_json(document)}


def _unknown_framework(spec: ParsedSpec, framework: str) -> Diagnostic:
    return Diagnostic(
        "unsupported-by-target",
        f"TrainingPipeline '{spec.name}' has model.framework: {framework}, which no pipeline step can train",
        spec.document.locate(("spec", "model", "framework")),
        path="spec.model.framework",
        hint=f"use one of: {', '.join(FRAMEWORKS)}",
    )


def _sink_on_scratch(spec: ParsedSpec[Deployment], environment: str, path: str) -> Diagnostic:
    """A batch Deployment of a cluster environment writing predictions to a folder: a pod's scratch disk."""
    return Diagnostic(
        "unsupported-by-target",
        f"batch Deployment '{spec.name}' writes its predictions to the folder {path}, but in environment "
        f"'{environment}' the score step runs in a Kubeflow pod, whose disk is gone when the step ends",
        spec.document.locate(("spec", "batch", "sink", "path")),
        path="spec.batch.sink.path",
        hint=f"write to a warehouse table in '{environment}' with an override: {{target: Deployment/{spec.name}, "
        "patch: {spec: {batch: {sink: {path: null, table: <schema.table>, connection: secret://<env>/warehouse}}}}}",
    )


def runtime_image(graph: ResolvedGraph, context: RenderContext) -> tuple[str | None, Diagnostic | None]:
    """The image every step runs: the recorded runtime image by digest on Kubeflow, a placeholder locally.

    On Kubeflow with no recorded image: (None, an ``image-not-built`` error at the environment's registry).
    """
    if graph.env.spec.targets.pipelines != "kubeflow":
        return LOCAL_IMAGE, None
    return recorded_image(graph, "runtime", context.project_root, unset_at=("spec", "targets", "pipelines"))


class KfpRenderer:
    """Renders ``kfp/<pipeline>.yaml`` (and ``-cpu`` variants and schedules) for every TrainingPipeline, and
    ``kfp/batch/<deployment>.yaml`` (and schedules) for every batch Deployment."""

    name: ClassVar[str] = "kfp"
    version: ClassVar[str] = "2"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """Compile every pipeline of the environment (cached ones are reused)."""
        out = RenderOutput()
        image, problem = runtime_image(graph, context)
        if image is None:
            if problem is not None:
                out.diagnostics.append(problem)
            return out
        platform = step_platform(graph, context)
        namespace = f"kfp/{self.version}/{_components_digest()}/{context.mlspec_version}/{image}/{_digest(platform)}"
        # (spec, with GPU, cache key): the key is the spec's content digest, so a hit costs no model dump
        planned: list[tuple[ParsedSpec[TrainingPipeline], bool, list[str]]] = []
        for spec in graph.specs(TrainingPipeline):
            pipeline = spec.model
            if pipeline.spec.model.framework not in FRAMEWORKS:
                out.diagnostics.append(_unknown_framework(spec, pipeline.spec.model.framework))
                continue
            gpu = pipeline.spec.resources.gpu
            for with_gpu in [True] + ([False] if gpu and gpu.fallback == "cpu" else []):
                planned.append((spec, with_gpu, [spec.digest, str(with_gpu)]))
        compiled: dict[int, bytes] = {}
        missing: list[int] = []
        for index, (_, _, key) in enumerate(planned):
            found = context.cache.lookup(namespace, key) if context.cache else None
            if found is None:
                missing.append(index)
            else:
                compiled[index] = found
        jobs = [
            pipeline_inputs(planned[i][0].model, gpu=planned[i][1], image=image, platform=platform) for i in missing
        ]
        for index, content in zip(missing, compile_all(jobs), strict=True):
            compiled[index] = content
            if context.cache:
                context.cache.store(namespace, planned[index][2], content)
        for index, (spec, with_gpu, _) in enumerate(planned):
            name = spec.name + ("" if with_gpu else "-cpu")
            out.artifacts.append(Artifact(f"kfp/{name}.yaml", compiled[index], self.name, (spec.ref,)))
        for spec in graph.specs(TrainingPipeline):
            schedule = spec.model.spec.schedule
            if schedule:
                path = f"kfp/{spec.name}.schedule.json"
                build = functools.partial(_schedule_file, path, spec.name, schedule, graph.name)
                files = reuse(context, f"{self.name}-schedule/{self.version}", [graph.name, spec.digest], build)
                out.artifacts.append(Artifact(path, files[path], self.name, (spec.ref,)))
        self._render_batch(graph, context, out, image, platform)
        return out

    def _render_batch(
        self,
        graph: ResolvedGraph,
        context: RenderContext,
        out: RenderOutput,
        image: str,
        platform: dict[str, Any] | None,
    ) -> None:
        namespace = "/".join(
            ("kfp-batch", self.version, _components_digest(), context.mlspec_version, image, _digest(platform))
        )
        for spec in graph.specs(Deployment):
            deployment = spec.model
            batch = deployment.spec
            if not isinstance(batch, BatchDeploymentSpec):
                continue
            service = batch_feature_service(graph, deployment)
            if service is None:  # references are checked before rendering: a model always has its pipeline
                continue
            if platform is not None and batch.batch.sink.path is not None:
                out.diagnostics.append(_sink_on_scratch(spec, graph.name, batch.batch.sink.path))
                continue
            # the fingerprint covers the Deployment and what it reads (its model's pipeline, the feature service)
            key = [graph.fingerprint(spec.ref)]
            compiled = context.cache.lookup(namespace, key) if context.cache else None
            if compiled is None:
                compiled = _compile_batch(batch_inputs(deployment, batch, service, image, platform))
                if context.cache:
                    context.cache.store(namespace, key, compiled)
            out.artifacts.append(Artifact(f"kfp/batch/{spec.name}.yaml", compiled, self.name, (spec.ref,)))
            schedule = batch.batch.schedule
            if schedule:
                path = f"kfp/batch/{spec.name}.schedule.json"
                name = batch_pipeline_name(spec.name)
                build = functools.partial(_schedule_file, path, name, schedule, graph.name)
                files = reuse(context, f"{self.name}-batch-schedule/{self.version}", [graph.name, spec.digest], build)
                out.artifacts.append(Artifact(path, files[path], self.name, (spec.ref,)))
