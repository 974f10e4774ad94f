"""The feature store's Jobs for a shared environment, in ``gitops/feast.yaml``.

The rendered Feast repository (``feast/feature_store.yaml`` and ``features.py``) travels
in a ConfigMap; a Sync hook Job runs ``feast apply`` on it after the ConfigMap is
updated (named after the repository's digest: once per change), and a CronJob runs
``feast materialize-incremental`` on ``targets.feature_store.materialize``. When an online Deployment reads a
FeatureService with entities, Feast's feature server runs too (``feast serve``, Deployment and Service
``feast-feature-server`` on 6566, reachable only from model server pods): the runtimes ask it for a request's
features by entity key (:mod:`mlspec.render.entity_lookup`). All run in
the runtime image with the store connection's Secret as ``MLSPEC_SECRET_<REF>_<KEY>``
variables, which feature_store.yaml names. The offline store reads object storage or a
warehouse: the Feast renderer refuses a shared environment whose sources are files on
disk.
"""

from __future__ import annotations

from typing import Any

from mlspec.render.base import Artifact, RenderContext
from mlspec.render.endpoint_auth import DEPLOYMENT_LABEL
from mlspec.render.entity_lookup import FEATURE_SERVER, FEATURE_SERVER_PORT, cluster_lookup
from mlspec.render.feast import FeastRenderer, reads_in_cluster
from mlspec.render.gitops_jobs import hook_annotations, hook_name, job, job_pod
from mlspec.render.images import image_reference
from mlspec.render.kserve import labels
from mlspec.render.secret_refs import secret_env_from
from mlspec.render.serialize import to_yaml_documents
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec

REPO_DIR = "/feast-repo"
REPO_CONFIG = "mlspec-feast-repo"
FILES = ("feature_store.yaml", "features.py")


def feast_pod(graph: ResolvedGraph, project: str, name: str, command: list[str]) -> dict[str, Any]:
    """A pod with the repository's files in a writable folder (Feast may write beside them)."""
    store = graph.env.spec.targets.feature_store
    mounts = [{"name": "repo", "mountPath": REPO_DIR}] + [
        {"name": "repo-files", "mountPath": f"{REPO_DIR}/{file}", "subPath": file, "readOnly": True} for file in FILES
    ]
    volumes = [{"name": "repo", "emptyDir": {}}, {"name": "repo-files", "configMap": {"name": REPO_CONFIG}}]
    return job_pod(
        graph, project, name=name, image=image_reference(graph, "runtime"), command=command,
        env_from=[secret_env_from(store.connection)] if store.connection else None, mounts=mounts, volumes=volumes,
    )  # fmt: skip


def feast_objects(graph: ResolvedGraph, project: str, files: dict[str, bytes]) -> list[dict[str, Any]]:
    """The repository's ConfigMap, the apply hook Job and the materialization CronJob."""
    k8s = graph.env.spec.targets.kubernetes
    assert k8s is not None
    data = {file: files[f"feast/{file}"].decode() for file in FILES}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": REPO_CONFIG,
            "namespace": k8s.namespace,
            "labels": labels(REPO_CONFIG, graph, project, "feature-store"),
        },
        "data": data,
    }
    apply_name = hook_name("feast-apply", graph.name, "".join(data[f] for f in FILES))
    apply_pod = feast_pod(graph, project, apply_name, ["feast", "-c", REPO_DIR, "apply"])
    # a Sync hook in wave 1: after the ConfigMap (wave 0) is updated, before the pipelines' PostSync hooks train
    apply_job = job(graph, project, apply_name, apply_pod, hook_annotations("Sync", wave=1))
    materialize = "materialize"
    command = ["sh", "-c", f'exec feast -c {REPO_DIR} materialize-incremental "$(date -u +%Y-%m-%dT%H:%M:%S)"']
    cron_job = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": f"feast-{materialize}",
            "namespace": k8s.namespace,
            "labels": labels(f"feast-{materialize}", graph, project, "feature-store"),
        },
        "spec": {
            "schedule": graph.env.spec.targets.feature_store.materialize,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 3600,
                    "template": feast_pod(graph, project, f"feast-{materialize}", command),
                }
            },
        },
    }
    return [config_map, apply_job, cron_job, *feature_server(graph, project)]


def feature_server(graph: ResolvedGraph, project: str) -> list[dict[str, Any]]:
    """Feast's feature server on the namespace's online store, when a Deployment looks features up by entity key:
    its Deployment, Service and the NetworkPolicy that lets only model server pods in."""
    k8s = graph.env.spec.targets.kubernetes
    assert k8s is not None
    if not any(
        isinstance(d.model.spec, OnlineDeploymentSpec) and cluster_lookup(graph, d.model) is not None
        for d in graph.specs(Deployment)
    ):
        return []
    command = ["feast", "-c", REPO_DIR, "serve", "--host", "0.0.0.0", "--port", str(FEATURE_SERVER_PORT)]
    pod = feast_pod(graph, project, FEATURE_SERVER, command)
    pod["spec"]["restartPolicy"] = "Always"  # a server, not a Job
    (container,) = pod["spec"]["containers"]
    container["ports"] = [{"name": "http", "containerPort": FEATURE_SERVER_PORT, "protocol": "TCP"}]
    container["readinessProbe"] = {"httpGet": {"path": "/health", "port": FEATURE_SERVER_PORT}}
    selector = {"app.kubernetes.io/name": FEATURE_SERVER}
    pod["metadata"]["labels"].update(selector)
    meta = {"name": FEATURE_SERVER, "namespace": k8s.namespace, "labels": labels(FEATURE_SERVER, graph, project,
                                                                               "feature-store")}  # fmt: skip
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 2, "selector": {"matchLabels": selector}, "template": pod}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": selector, "ports": [{"name": "http", "port": FEATURE_SERVER_PORT,
                                                   "targetPort": FEATURE_SERVER_PORT, "protocol": "TCP"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
         "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                      {"key": DEPLOYMENT_LABEL, "operator": "Exists"}]}}],
                               "ports": [{"protocol": "TCP", "port": FEATURE_SERVER_PORT}]}]}},
    ]  # fmt: skip


def feast_jobs(graph: ResolvedGraph, context: RenderContext) -> list[Artifact]:
    """``gitops/feast.yaml`` for a shared environment whose repository renders (the Feast renderer reports why
    it does not)."""
    if graph.env.spec.tier == "local" or not reads_in_cluster(graph.env):
        return []
    rendered = {a.path: a.content for a in FeastRenderer().render(graph, context).artifacts}
    if not all(f"feast/{file}" in rendered for file in FILES):
        return []
    content = to_yaml_documents(feast_objects(graph, context.project, rendered))
    sources = tuple(sorted({graph.environment.ref, *(ref for ref in graph.resources if _feast_kind(ref))}))
    return [Artifact("gitops/feast.yaml", content, "gitops", sources)]


def _feast_kind(ref: str) -> bool:
    return ref.split("/", 1)[0] in ("DataSource", "Entity", "FeatureView", "FeatureService")
