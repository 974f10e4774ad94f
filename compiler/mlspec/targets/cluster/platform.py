"""The cluster target: writes the environment's artifacts, then makes the cluster's systems match them.

Per resource: its ``kubernetes/*.yaml`` objects are server-side applied (and the
objects it no longer renders deleted, if labelled as mlspec's for this project and
environment), then waited on until ready; a TrainingPipeline's compiled pipeline
is uploaded to the KFP server and run, and its schedule becomes a recurring run
(so is a batch Deployment's ``kfp/batch/<name>.yaml``, as pipeline ``batch-<name>``);
the Environment's ``mlflow/registry.json`` is applied to the tracking server.
Every step is idempotent, so re-applying after a crash converges.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from mlspec.plan.model import Change
from mlspec.render.base import Artifact
from mlspec.render.kfp import batch_pipeline_name
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.cluster import cluster_context
from mlspec.state.model import ResourceState
from mlspec.targets.base import TargetError
from mlspec.targets.cluster.kfp_server import KfpServer
from mlspec.targets.cluster.kubernetes import (
    KIND_ORDER,
    KubernetesApplier,
    ObjectRef,
    load_manifests,
    managed_labels,
    owned_differences,
    readiness,
)
from mlspec.targets.cluster.mlflow_server import MlflowServer, load_registry
from mlspec.targets.cluster.model_pins import VersionLookup, pin_model_versions
from mlspec.targets.output_dir import OutputDirTarget

WAITED_KINDS = ("InferenceService", "Deployment")
REGISTRY_FILE = "mlflow/registry.json"


def kubernetes_paths(paths: Any) -> list[str]:
    """The manifests applied to the cluster (``kubernetes-fallback/`` is applied only by hand)."""
    return sorted(p for p in paths if p.startswith("kubernetes/") and p.endswith((".yaml", ".yml")))


class ClusterTarget:
    """A Target over the output folder plus Kubernetes, a KFP server and an MLflow server (each optional)."""

    name: ClassVar[str] = "cluster"

    def __init__(
        self,
        output: Path,
        graph: ResolvedGraph,
        rendered: dict[str, Artifact],
        *,
        project: str,
        kubernetes: KubernetesApplier | None = None,
        kfp: KfpServer | None = None,
        mlflow: MlflowServer | None = None,
        versions: VersionLookup | None = None,
        wait: bool = True,
        run_pipelines: bool = True,
        prune: bool = True,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.output = OutputDirTarget(output)
        self.graph = graph
        self.rendered = rendered
        self.project = project
        self.kubernetes = kubernetes
        self.kfp = kfp
        self.mlflow = mlflow
        self.versions = versions or mlflow  # where served aliases and versions are looked up (the registry)
        self.wait = wait
        self.run_pipelines = run_pipelines
        self.prune = prune
        self.progress = progress

    @property
    def labels(self) -> dict[str, str]:
        """The labels that mark an object as this project's and environment's (the prune guard)."""
        return managed_labels(self.project, self.graph.name)

    # -- Target protocol ------------------------------------------------------------------------------

    def plan(self, change: Change, previous: ResourceState | None) -> list[str]:
        """The files written plus what each system will do."""
        steps = self.output.plan(change, previous)
        name = change.ref.split("/", 1)[1]
        old = kubernetes_paths(previous.artifacts if previous else ())
        if change.action == "delete":
            if self.kubernetes and old:
                steps.append(f"delete the mlspec-labelled objects of {', '.join(old)}")
            if self.kfp and change.kind == "TrainingPipeline":
                steps.append(f"delete the recurring run of {name}")
            if self.kfp and previous is not None and f"kfp/batch/{name}.schedule.json" in previous.artifacts:
                steps.append(f"delete the recurring run of {batch_pipeline_name(name)} (predictions are kept)")
            return steps
        new = kubernetes_paths(change.artifacts)
        if self.kubernetes and new:
            steps.append(f"server-side apply {', '.join(new)} (field manager mlspec)")
            if set(old) - set(new):
                steps.append(f"delete objects only {', '.join(sorted(set(old) - set(new)))} had")
            if self.wait:
                steps.append("wait until InferenceServices are Ready and Deployments Available")
        if self.kubernetes and self.prune and change.kind == "Environment":
            steps.append(f"prune objects labelled {self.labels} that are no longer rendered")
        if self.kfp and change.kind == "TrainingPipeline":
            if f"kfp/{name}.yaml" in change.artifacts:
                run = " and start a run" if self.run_pipelines else ""
                steps.append(f"upload kfp/{name}.yaml as a pipeline version{run}")
            if f"kfp/{name}.schedule.json" in change.artifacts:
                steps.append(f"create or update the recurring run of {name}")
        if self.kfp and change.kind == "Deployment" and f"kfp/batch/{name}.yaml" in change.artifacts:
            pipeline = batch_pipeline_name(name)
            run = " and start a run" if self.run_pipelines else ""
            steps.append(f"upload kfp/batch/{name}.yaml as a version of pipeline {pipeline}{run}")
            if f"kfp/batch/{name}.schedule.json" in change.artifacts:
                steps.append(f"create or update the recurring run of {pipeline}")
        if self.mlflow and change.kind == "Environment" and REGISTRY_FILE in change.artifacts:
            steps.append(f"apply {REGISTRY_FILE} to {self.mlflow.tracking_uri}")
        return steps

    def apply(
        self,
        change: Change,
        artifacts: dict[str, Artifact],
        previous: ResourceState | None,
        keep: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """Write the artifacts, then apply them to each system (objects first, then pipelines, registry)."""
        name = change.ref.split("/", 1)[1]
        old_refs = self._applied_objects(previous, keep)  # read before the output folder is overwritten
        ids = self.output.apply(change, artifacts, previous, keep)
        if change.action == "delete":
            if self.kubernetes:
                for ref in sorted(old_refs, key=lambda r: -KIND_ORDER.get(r.kind, len(KIND_ORDER))):
                    self.kubernetes.delete(ref, self.labels)
            if self.kfp and change.kind == "TrainingPipeline":
                self.kfp.delete_schedule(name)
            if self.kfp and previous is not None and f"kfp/batch/{name}.schedule.json" in previous.artifacts:
                self.kfp.delete_schedule(batch_pipeline_name(name))  # scoring stops; the sink keeps its rows
            return ids
        if self.kubernetes:
            ids.update(self._apply_objects(artifacts, old_refs))
        if self.kfp and change.kind == "TrainingPipeline":
            ids.update(self._apply_pipeline(name, artifacts, previous))
        if self.kfp and change.kind == "Deployment" and f"kfp/batch/{name}.yaml" in artifacts:
            ids.update(self._apply_pipeline(name, artifacts, previous, folder="kfp/batch/"))
        if self.mlflow and change.kind == "Environment" and REGISTRY_FILE in artifacts:
            self.progress(f"apply {REGISTRY_FILE} to {self.mlflow.tracking_uri}")
            ids.update(self.mlflow.apply(load_registry(artifacts[REGISTRY_FILE].content)))
        return ids

    def read_live(self, resource: ResourceState) -> dict[str, str | None]:
        """Artifact files as they are now; a manifest's hash changes when a field mlspec sets drifted in the cluster."""
        live = self.output.read_live(resource)
        if self.kubernetes is None:
            return live
        for path, drifted in self.drift(resource).items():
            live[path] = None if drifted is None else hashlib.sha256("\n".join(drifted).encode()).hexdigest()
        return live

    def healthy(self, resource: ResourceState) -> bool:
        """Artifacts and owned fields intact, and every InferenceService and Deployment ready."""
        if self.read_live(resource) != resource.artifacts:
            return False
        if self.kubernetes is None:
            return True
        for ref in self._objects(resource.artifacts):
            if ref.kind in WAITED_KINDS:
                live = self.kubernetes.get(ref)
                if live is None or not readiness(live)[0]:
                    return False
        return True

    # -- drift and objects ----------------------------------------------------------------------------

    def drift(self, resource: ResourceState) -> dict[str, list[str] | None]:
        """Per manifest with drift: the object fields that differ from what was applied (None: an object is gone)."""
        assert self.kubernetes is not None
        report: dict[str, list[str] | None] = {}
        for path in kubernetes_paths(resource.artifacts):
            content = self._applied_content(path, resource.artifacts[path])
            if content is None:
                continue  # the file itself changed: the output folder already reports it
            differences: list[str] = []
            for obj in self._pinned(load_manifests(content)):
                ref = ObjectRef.of(obj)
                got = self.kubernetes.get(ref)
                if got is None:
                    report[path] = None
                    break
                differences += [f"{ref}: {field}" for field in owned_differences(obj, got)]
            else:
                if differences:
                    report[path] = differences
        return report

    def _pinned(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Objects as they would be applied now: an alias that moved to another version shows as storageUri drift
        (the registry unreachable: compared as rendered)."""
        if self.versions is None:
            return objects
        try:
            return pin_model_versions(objects, self.versions)
        except TargetError:
            return objects

    def _canary_in_place(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live InferenceService when applying ``obj`` would change nothing but its canary traffic, which the
        rollout controller owns (else None: apply it). Re-applying the rendered first step to a promoted revision
        would make KServe send the rest of the traffic back to the revision before it."""
        predictor = (obj.get("spec") or {}).get("predictor") or {}
        if obj.get("kind") != "InferenceService" or "canaryTrafficPercent" not in predictor or self.kubernetes is None:
            return None
        live = self.kubernetes.get(ObjectRef.of(obj))
        if live is None:
            return None
        desired = copy.deepcopy(obj)
        del desired["spec"]["predictor"]["canaryTrafficPercent"]
        return None if owned_differences(desired, live) else live

    def _applied_content(self, path: str, sha256: str) -> bytes | None:
        artifact = self.rendered.get(path)
        if artifact is not None and artifact.sha256 == sha256:
            return artifact.content
        try:
            content = (self.output.root / path).read_bytes()
        except OSError:
            return None
        return content if hashlib.sha256(content).hexdigest() == sha256 else None

    def _objects(self, artifacts: dict[str, str]) -> list[ObjectRef]:
        refs = []
        for path in kubernetes_paths(artifacts):
            content = self._applied_content(path, artifacts[path])
            refs += [ObjectRef.of(o) for o in load_manifests(content or b"")]
        return refs

    def _applied_objects(self, previous: ResourceState | None, keep: frozenset[str]) -> set[ObjectRef]:
        if previous is None or self.kubernetes is None:
            return set()
        return set(self._objects({p: s for p, s in previous.artifacts.items() if p not in keep}))

    def _rendered_objects(self) -> set[ObjectRef]:
        return {
            ObjectRef.of(o)
            for path in kubernetes_paths(self.rendered)
            for o in load_manifests(self.rendered[path].content)
        }

    def _apply_objects(self, artifacts: dict[str, Artifact], old_refs: set[ObjectRef]) -> dict[str, str]:
        assert self.kubernetes is not None
        objects = [o for path in kubernetes_paths(artifacts) for o in load_manifests(artifacts[path].content)]
        objects = pin_model_versions(objects, self.versions)  # aliases become exact versions, never paths
        ids: dict[str, str] = {}
        kept = [live for live in map(self._canary_in_place, objects) if live is not None]
        applied = [o for o in objects if ObjectRef.of(o) not in {ObjectRef.of(k) for k in kept}]
        if applied:
            self.progress(f"server-side apply {len(applied)} object(s)")
        for live in [*self.kubernetes.apply(applied), *kept] if applied else kept:
            meta = live.get("metadata") or {}
            if meta.get("uid"):
                ids[f"uid/{live.get('kind')}/{meta.get('name')}"] = str(meta["uid"])
        new_refs = {ObjectRef.of(o) for o in objects}
        for ref in sorted(old_refs - new_refs - self._rendered_objects(), key=lambda r: -KIND_ORDER.get(r.kind, 99)):
            self.progress(f"delete {ref} (no longer rendered)")
            self.kubernetes.delete(ref, self.labels)
        k8s = self.graph.env.spec.targets.kubernetes
        if self.prune and k8s is not None and any(o.get("kind") == "Namespace" for o in objects):
            wanted = self._rendered_objects() | new_refs
            for ref in self.kubernetes.prune(self.labels, k8s.namespace, wanted):
                self.progress(f"pruned {ref}")
        waited = [r for r in new_refs if r.kind in WAITED_KINDS]
        if self.wait and waited and not self.kubernetes.dry_run:
            self.progress(f"wait for {', '.join(str(r) for r in sorted(waited))}")
            self.kubernetes.wait_ready(waited)
        return ids

    def _apply_pipeline(
        self, name: str, artifacts: dict[str, Artifact], previous: ResourceState | None, *, folder: str = "kfp/"
    ) -> dict[str, str]:
        """Upload ``<folder><name>.yaml``, run it, and create, replace or delete its recurring run (a batch
        Deployment's pipeline, under ``kfp/batch/``, is named ``batch-<name>``)."""
        assert self.kfp is not None
        package, schedule = f"{folder}{name}.yaml", f"{folder}{name}.schedule.json"
        pipeline_name = batch_pipeline_name(name) if folder == "kfp/batch/" else name
        ids: dict[str, str] = {}
        if package not in artifacts:
            return ids
        pipeline = self.kfp.upload(pipeline_name, self.output.root / package, artifacts[package].sha256)
        ids.update(pipeline_id=pipeline.pipeline_id, pipeline_version_id=pipeline.version_id)
        if self.run_pipelines:
            self.progress(f"start a KFP run of {pipeline_name}")
            ids["run_id"] = self.kfp.run(pipeline_name, pipeline)
        if schedule in artifacts:
            recurring, changed = self.kfp.ensure_schedule(json.loads(artifacts[schedule].content), pipeline)
            ids["recurring_run_id"] = recurring
            if changed:
                self.progress(f"recurring run of {pipeline_name} created")
        elif previous is not None and schedule in previous.artifacts:
            self.kfp.delete_schedule(pipeline_name)
        return ids


def cluster_target(
    project: str,
    graph: ResolvedGraph,
    output: Path,
    rendered: dict[str, Artifact],
    progress: Callable[[str], None] = lambda _: None,
) -> ClusterTarget:
    """The cluster target for an environment, from its ``targets`` (Kubernetes context, KFP, MLflow URI).

    The KFP endpoint comes from ``KF_PIPELINES_ENDPOINT`` (kfp's own variable); without it,
    pipelines are only written to the output folder.
    """
    targets = graph.env.spec.targets
    k8s = targets.kubernetes
    kubernetes = KubernetesApplier(context=k8s.context) if k8s is not None and targets.serving == "kserve" else None
    kfp = None
    if targets.pipelines == "kubeflow" and os.environ.get("KF_PIPELINES_ENDPOINT"):
        registry, store = targets.registry, targets.registry.artifact_store
        kfp = KfpServer(
            host=os.environ["KF_PIPELINES_ENDPOINT"],
            experiment=f"{project}-{graph.name}",
            namespace=os.environ.get("KF_PIPELINES_NAMESPACE"),
            context=cluster_context(
                graph.name,
                registry.tracking_uri,
                store.uri if store else None,
                store_credentials=store.credentials if store else None,
                kms_key=graph.env.spec.encryption.kms_key,
            ),
        )
    mlflow = registry_of(graph)
    if kubernetes is None and kfp is None and mlflow is None:
        raise TargetError(f"environment '{graph.name}' names no cluster system to apply to")
    return ClusterTarget(
        output, graph, rendered, project=project, kubernetes=kubernetes, kfp=kfp, mlflow=mlflow, progress=progress
    )


def registry_of(graph: ResolvedGraph) -> MlflowServer | None:
    """The environment's model registry (``targets.registry.tracking_uri``), or None when it names none."""
    tracking = graph.env.spec.targets.registry.tracking_uri
    return MlflowServer(tracking) if tracking else None
