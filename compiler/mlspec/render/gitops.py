"""What Argo CD applies besides serving: ``gitops/`` of an environment with ``targets.gitops``.

Merging a spec change must train, with nobody running a command. So each pipeline
(every TrainingPipeline, and every batch Deployment's ``batch-<name>``) becomes
Kubeflow's Kubernetes-native ``Pipeline`` and ``PipelineVersion`` objects
(``pipelines.kubeflow.org/v2beta1``; the version is named after the compiled YAML's
digest and carries it as ``pipelineSpec``), plus a PostSync hook Job that runs
``python -m mlspec.runtime.submit`` in the runtime image: it starts a run of that
version and creates, replaces or deletes the recurring run from the schedule. The
Job's name is a digest of its request, so a changed pipeline (or schedule) runs once
and an unchanged one never again. ``gitops/feast.yaml`` holds the feature store's
Jobs (:mod:`mlspec.render.gitops_feast`); ``gitops/schedules.yaml`` a last PostSync
hook deleting the recurring runs of pipelines that left the specs; ``gitops/jobs.yaml``
the Jobs' account and network policy. KFP must store pipelines in Kubernetes (its
``kubernetes`` pipeline store) for the objects to be served. With ``mlspec apply --direct`` none of this is
applied: mlspec uploads, runs and schedules through the KFP API itself.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import yaml

from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.gitops_feast import feast_jobs
from mlspec.render.gitops_jobs import digest, hook_annotations, hook_name, job, job_access, job_pod, kfp_access
from mlspec.render.images import image_reference
from mlspec.render.kfp import KfpRenderer, batch_pipeline_name
from mlspec.render.kserve import labels
from mlspec.render.serialize import to_yaml_documents
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.cluster import cluster_context
from mlspec.runtime.submit import PruneRequest, Schedule, SubmitRequest
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment
from mlspec.spec.training import TrainingPipeline

API = "pipelines.kubeflow.org/v2beta1"


def version_name(pipeline: str, compiled: bytes) -> str:
    """The PipelineVersion's name: the pipeline's and the compiled YAML's digest (as ``--direct`` names it)."""
    return f"{pipeline[:50]}-{digest(compiled, 12)}"


def submit_request(graph: ResolvedGraph, project: str, pipeline: str, compiled: bytes, schedule: bytes | None) -> str:
    """The hook's request: run this version with the environment's RuntimeContext, and this schedule."""
    registry = graph.env.spec.targets.registry
    store = registry.artifact_store
    context = cluster_context(
        graph.name,
        registry.tracking_uri,
        store.uri if store else None,
        store_credentials=store.credentials if store else None,
        kms_key=graph.env.spec.encryption.kms_key,
    )
    parameters = {"environment": context.to_json()}
    version = version_name(pipeline, compiled)
    plan = json.loads(schedule) if schedule else None
    request = SubmitRequest(
        pipeline=pipeline,
        version=version,
        experiment=f"{project}-{graph.name}",
        run_name=f"{pipeline} {graph.name} {digest(version + json.dumps(parameters, sort_keys=True), 12)}",
        parameters=parameters,
        schedule_name=f"{pipeline}-{graph.name}-schedule",
        schedule=Schedule(str(plan["cron"]), int(plan["max_concurrency"]), bool(plan["no_catchup"])) if plan else None,
    )
    return request.to_json()


def pipeline_objects(
    graph: ResolvedGraph, project: str, pipeline: str, *, description: str, compiled: bytes, schedule: bytes | None
) -> list[dict[str, Any]]:
    """The Pipeline, its PipelineVersion carrying the compiled spec, and the run-submitting hook Job."""
    k8s = graph.env.spec.targets.kubernetes
    assert k8s is not None
    documents = [d for d in yaml.load_all(compiled, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
    version = version_name(pipeline, compiled)
    meta = {"namespace": k8s.namespace, "labels": labels(pipeline, graph, project, "pipeline")}
    spec: dict[str, Any] = {
        "pipelineName": pipeline,
        "displayName": version,
        "description": description,
        "pipelineSpec": documents[0],
    }
    if len(documents) > 1:
        spec["platformSpec"] = documents[1]
    request = submit_request(graph, project, pipeline, compiled, schedule)
    env, mounts, volumes = kfp_access()
    name = hook_name("run", pipeline, request)
    pod = job_pod(
        graph, project, name=name, image=image_reference(graph, "runtime"),
        command=["python", "-m", "mlspec.runtime.submit", "--request", request],
        env=env, mounts=mounts, volumes=volumes,
    )  # fmt: skip
    return [
        {
            "apiVersion": API,
            "kind": "Pipeline",
            "metadata": {"name": pipeline, **meta},
            "spec": {"displayName": pipeline, "description": description},
        },
        {
            "apiVersion": API,
            "kind": "PipelineVersion",
            # after its Pipeline: KFP refuses a version of a pipeline it does not have
            "metadata": {"name": version, **meta, "annotations": {"argocd.argoproj.io/sync-wave": "1"}},
            "spec": spec,
        },
        job(graph, project, name, pod, hook_annotations("PostSync")),
    ]


def prune_objects(graph: ResolvedGraph, project: str, kept: list[str]) -> list[dict[str, Any]]:
    """A PostSync hook Job, after the pipelines' (wave 1), deleting the recurring runs of pipelines that left the
    specs; named by the kept set, so it runs when that changes."""
    request = PruneRequest(f"{project}-{graph.name}", f"-{graph.name}-schedule", tuple(sorted(kept))).to_json()
    env, mounts, volumes = kfp_access()
    name = hook_name("prune", "schedules", request)
    pod = job_pod(
        graph, project, name=name, image=image_reference(graph, "runtime"),
        command=["python", "-m", "mlspec.runtime.submit", "--prune", request], env=env, mounts=mounts, volumes=volumes,
    )  # fmt: skip
    return [job(graph, project, name, pod, hook_annotations("PostSync", wave=1))]


class GitOpsRenderer:
    """Renders ``gitops/``: the Kubeflow pipeline objects and hooks, the Feast Jobs, their account and network."""

    name: ClassVar[str] = "gitops"
    version: ClassVar[str] = "1"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """Every object Argo CD needs to train, score and load features in this environment."""
        out = RenderOutput()
        targets = graph.env.spec.targets
        if targets.gitops is None or targets.kubernetes is None:
            return out
        if targets.pipelines == "kubeflow":
            self._pipelines(graph, context, out)
        out.artifacts.extend(feast_jobs(graph, context))
        if out.artifacts:
            content = to_yaml_documents(job_access(graph, context.project))
            out.artifacts.append(Artifact("gitops/jobs.yaml", content, self.name, (graph.environment.ref,)))
        return out

    def _pipelines(self, graph: ResolvedGraph, context: RenderContext, out: RenderOutput) -> None:
        # the kfp renderer's own compiles (cached); it reports their problems, so they are not repeated here
        compiled = {a.path: a for a in KfpRenderer().render(graph, context).artifacts}
        wanted: list[tuple[str, str, str, str, str]] = []  # (ref, pipeline, description, package, schedule)
        for spec in graph.specs(TrainingPipeline):
            model = spec.model
            description = model.metadata.description or f"Train and register {model.model_name}"
            wanted.append((spec.ref, spec.name, description, f"kfp/{spec.name}", f"gitops/pipeline-{spec.name}.yaml"))
        for dep in graph.specs(Deployment):
            if isinstance(dep.model.spec, BatchDeploymentSpec):
                description = dep.model.metadata.description or f"Score with {dep.model.spec.model.name}"
                name = batch_pipeline_name(dep.name)
                wanted.append((dep.ref, name, description, f"kfp/batch/{dep.name}", f"gitops/{name}.yaml"))
        kept: list[str] = []
        for ref, pipeline, description, package, path in wanted:
            found = compiled.get(f"{package}.yaml")
            if found is None:
                continue
            schedule = compiled.get(f"{package}.schedule.json")
            if schedule is not None:
                kept.append(f"{pipeline}-{graph.name}-schedule")
            key = [graph.environment.digest, found.sha256, schedule.sha256 if schedule else "", description]

            def build(
                pipeline: str = pipeline, description: str = description, found: Artifact = found,
                schedule: Artifact | None = schedule, path: str = path,
            ) -> dict[str, bytes]:  # fmt: skip
                content = schedule.content if schedule else None
                objects = pipeline_objects(
                    graph, context.project, pipeline, description=description, compiled=found.content, schedule=content
                )
                return {path: to_yaml_documents(objects)}

            files = reuse(
                context, f"{self.name}-pipeline/{self.version}/{image_reference(graph, 'runtime')}", key, build
            )
            out.artifacts.append(Artifact(path, files[path], self.name, (ref,)))
        content = to_yaml_documents(prune_objects(graph, context.project, kept))
        out.artifacts.append(Artifact("gitops/schedules.yaml", content, self.name, (graph.environment.ref,)))
