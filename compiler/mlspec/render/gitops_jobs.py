"""The pieces every GitOps Job shares: hook annotations, a locked-down pod in the runtime image, and the
ServiceAccount and NetworkPolicy the Jobs run under.

A hook Job's name carries a digest of what it does: Argo CD creates a named hook only
once (no delete policy), so a changed request runs once and an unchanged one never again.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mlspec.render.kserve import labels
from mlspec.resolve.graph import ResolvedGraph

JOB_ACCOUNT = "mlspec-jobs"
JOB_LABEL = "mlspec.dev/job"
# Every Job runs as this unprivileged user, whatever the image's default.
RUN_AS = 65532
KFP_ENDPOINT = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
KFP_TOKEN_DIR = "/var/run/secrets/kubeflow/pipelines"
# What Jobs reach besides DNS: the KFP API (kubeflow namespace), and the stores' usual ports anywhere
# (object storage and warehouses over HTTPS, PostgreSQL, Redis): their hosts are secrets, unknown here.
STORE_PORTS = (443, 5432, 6379)


def digest(text: str | bytes, length: int = 10) -> str:
    """A short content digest for names."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:length]


def hook_name(prefix: str, name: str, content: str) -> str:
    """``<prefix>-<name>-<digest>``, at most 63 characters (a Job's name becomes a label value)."""
    room = 63 - len(prefix) - 12
    return f"{prefix}-{name[:room].rstrip('-')}-{digest(content)}"


def hook_annotations(phase: str, wave: int = 0) -> dict[str, str]:
    """Argo CD hook annotations: created once per name, never deleted by Argo CD (old ones keep their logs)."""
    annotations = {"argocd.argoproj.io/hook": phase}
    if wave:
        annotations["argocd.argoproj.io/sync-wave"] = str(wave)
    return annotations


def job_pod(
    graph: ResolvedGraph,
    project: str,
    *,
    name: str,
    image: str,
    command: list[str],
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Job's pod template: one non-root container with a read-only root, /tmp writable, no API token."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}, *(env or [])],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *(mounts or [])],
    }
    if env_from:
        container["envFrom"] = env_from
    return {
        "metadata": {"labels": {**labels(name, graph, project, "job"), JOB_LABEL: name}},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": JOB_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, *(volumes or [])],
        },
    }


def job(
    graph: ResolvedGraph, project: str, name: str, pod: dict[str, Any], annotations: dict[str, str]
) -> dict[str, Any]:
    """A Job that runs ``pod`` once (three tries, at most an hour)."""
    namespace = _namespace(graph)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name, graph, project, "job"),
            "annotations": annotations,
        },
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 3600, "template": pod},
    }


def kfp_access() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, mounts, volumes) that let kfp.Client reach the in-cluster KFP API with a projected token."""
    env = [
        {"name": "KF_PIPELINES_ENDPOINT", "value": KFP_ENDPOINT},
        {"name": "KF_PIPELINES_SA_TOKEN_PATH", "value": f"{KFP_TOKEN_DIR}/token"},
    ]
    mounts = [{"name": "kfp-token", "mountPath": KFP_TOKEN_DIR, "readOnly": True}]
    token = {"audience": "pipelines.kubeflow.org", "expirationSeconds": 7200, "path": "token"}
    volumes = [{"name": "kfp-token", "projected": {"sources": [{"serviceAccountToken": token}]}}]
    return env, mounts, volumes


def job_access(graph: ResolvedGraph, project: str) -> list[dict[str, Any]]:
    """The Jobs' ServiceAccount, and the NetworkPolicy that opens the namespace's default-deny for them."""
    namespace = _namespace(graph)
    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": JOB_ACCOUNT, "namespace": namespace, "labels": labels(JOB_ACCOUNT, graph, project, "job")},
        "automountServiceAccountToken": False,
    }
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{JOB_ACCOUNT}-egress",
            "namespace": namespace,
            "labels": labels(JOB_ACCOUNT, graph, project, "network-policy"),
        },
        "spec": {
            "podSelector": {"matchExpressions": [{"key": JOB_LABEL, "operator": "Exists"}]},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [
                {
                    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": dns_ports,
                },
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}],
                    "ports": [{"protocol": "TCP", "port": 8888}],
                },
                {"ports": [{"protocol": "TCP", "port": port} for port in STORE_PORTS]},
            ],
        },
    }
    return [account, policy]


def _namespace(graph: ResolvedGraph) -> str:
    k8s = graph.env.spec.targets.kubernetes
    assert k8s is not None  # the GitOps renderer renders only for environments with a cluster
    return k8s.namespace
