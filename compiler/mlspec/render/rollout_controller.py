"""The canary controller of a namespace and the scrape it reads: ``kubernetes/rollout-controller.yaml``.

Rendered for every KServe environment that serves a canary. KServe only splits traffic by
``canaryTrafficPercent``; this controller (:mod:`mlspec.serving.rollout_watch`, from the serving image) judges each
canary from Prometheus with the laptop's rules and moves the percentage, promotes or rolls back. The file holds:

* the ServiceAccount ``mlspec-rollout`` and a Role allowing only ``get``, ``list``, ``watch`` and ``patch`` on
  InferenceServices and ``create`` on Events in the namespace, bound to it;
* the Deployment ``mlspec-rollout`` (one replica, ``Recreate``: two controllers never judge one canary; its state
  lives in each InferenceService, so a replacement pod resumes), non-root and read-only, told the environment's
  tracking server so that a rollback moves the served alias back and rejects the version, as on the laptop;
* its NetworkPolicy: no ingress; egress to DNS, the API server (443, 6443) and Prometheus;
* the PodMonitor ``mlspec-model-servers`` (Prometheus Operator) that scrapes every model server pod of the
  namespace where its ``prometheus.io/*`` annotations point (the runtime's ``/metrics`` on 8080, or Istio's merged
  metrics on 15020 when the sidecar rewrote them), and a NetworkPolicy letting Prometheus's namespace in on
  those two ports.

The Prometheus is ``targets.kubernetes.prometheus`` (default: the Prometheus Operator's ``prometheus-operated``
service in ``monitoring``); it must select PodMonitors in this namespace.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mlspec.render.endpoint_auth import DEPLOYMENT_LABEL
from mlspec.render.kserve_runtime import HTTP_PORT, RESTRICTED
from mlspec.render.secret_refs import secret_source

NAME = "mlspec-rollout"
MONITOR = "mlspec-model-servers"
MERGED_METRICS_PORT = 15020  # Istio's agent serves the app's metrics merged with its own here
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(HTTP_PORT),
    "prometheus.io/path": "/metrics",
}


def prometheus_namespace(url: str) -> str | None:
    """The namespace of an in-cluster Prometheus URL (``http://<service>.<namespace>.svc[...]:9090``), else None."""
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) >= 3 and parts[2] == "svc" else None


def registry_env(tracking_uri: str | None) -> list[dict[str, Any]]:
    """Where the controller finds the tracking server whose aliases a rollback moves back (``MLSPEC_REGISTRY``:
    the URL, or from the Secret a ``secret://``/``k8s://`` reference names), and its optional bearer token
    (``MLFLOW_TRACKING_TOKEN`` from the Secret ``mlspec-rollout-mlflow``, key ``token``, when it exists)."""
    if tracking_uri is None:
        return []
    source = secret_source(tracking_uri)
    if source is not None:
        url: dict[str, Any] = {"name": "MLSPEC_REGISTRY",
                               "valueFrom": {"secretKeyRef": {"name": source[0], "key": source[1]}}}  # fmt: skip
    elif tracking_uri.startswith(("http://", "https://")):
        url = {"name": "MLSPEC_REGISTRY", "value": tracking_uri}
    else:  # env:// or a database URL: nothing a pod can call
        return []
    token = {"secretKeyRef": {"name": "mlspec-rollout-mlflow", "key": "token", "optional": True}}
    return [url, {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": token}]


def rollout_controller(
    image: str, namespace: str, prometheus: str, object_labels: dict[str, str], tracking_uri: str | None = None
) -> list[dict[str, Any]]:
    """Every object of ``kubernetes/rollout-controller.yaml`` (see the module doc)."""
    meta = {"namespace": namespace, "labels": object_labels}
    selector = {"app.kubernetes.io/name": NAME}
    port = urlsplit(prometheus).port or (443 if prometheus.startswith("https") else 80)
    prometheus_ns = prometheus_namespace(prometheus)
    to_prometheus: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
    if prometheus_ns is not None:
        to_prometheus["to"] = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus_ns}}}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": NAME, **meta},
            "rules": [
                {
                    "apiGroups": ["serving.kserve.io"],
                    "resources": ["inferenceservices"],
                    "verbs": ["get", "list", "watch", "patch"],
                },
                # each decision that moves traffic is an Event on the InferenceService
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
                # after a rollback: which version the rolled-out revision serves (its pods' annotation)
                {"apiGroups": ["serving.knative.dev"], "resources": ["revisions"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": NAME, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        _deployment(image, prometheus, meta, selector, registry_env(tracking_uri)),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": NAME, **meta},
            "spec": {
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [
                    {
                        "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                    # the API server is no pod a selector can name: its ports, anywhere
                    {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
                    to_prometheus,
                ],
            },
        },
        *_scrape(namespace, prometheus_ns, object_labels),
    ]


def _deployment(
    image: str, prometheus: str, meta: dict[str, Any], selector: dict[str, str], env: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, **meta},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # never two controllers judging one canary
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": {**meta["labels"], **selector}},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "controller",
                            "image": image,
                            "command": ["python", "-m", "mlspec.serving.rollout_watch"],
                            "args": [f"--prometheus={prometheus}", "--poll=15"],
                            "env": env,
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"cpu": "200m", "memory": "256Mi"},
                            },
                            "securityContext": dict(RESTRICTED),
                        }
                    ],
                },
            },
        },
    }


def _scrape(namespace: str, prometheus_ns: str | None, object_labels: dict[str, str]) -> list[dict[str, Any]]:
    """The PodMonitor over every model server pod, and the way in for Prometheus's scrapes."""
    pods = {"matchExpressions": [{"key": DEPLOYMENT_LABEL, "operator": "Exists"}]}
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_"
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": MONITOR, "namespace": namespace, "labels": object_labels},
        "spec": {
            "selector": pods,
            "podMetricsEndpoints": [
                {
                    "interval": "15s",
                    "relabelings": [
                        # one target per pod: the container that declares the serving port
                        {"action": "keep", "sourceLabels": ["__meta_kubernetes_pod_container_port_number"],
                         "regex": str(HTTP_PORT)},
                        # where the pod's prometheus.io annotations say (Istio rewrites them to its merged metrics)
                        {"action": "replace", "sourceLabels": ["__address__", f"{annotation}port"],
                         "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2", "targetLabel": "__address__"},
                        {"action": "replace", "sourceLabels": [f"{annotation}path"], "regex": "(.+)",
                         "targetLabel": "__metrics_path__"},
                    ],
                }
            ],
        },
    }  # fmt: skip
    source: dict[str, Any] = (
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus_ns}}}
        if prometheus_ns is not None
        else {"namespaceSelector": {}}
    )
    way_in = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{MONITOR}-scrape", "namespace": namespace, "labels": object_labels},
        "spec": {
            "podSelector": pods,
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [source],
                    "ports": [
                        {"protocol": "TCP", "port": HTTP_PORT},
                        {"protocol": "TCP", "port": MERGED_METRICS_PORT},
                    ],
                }
            ],
        },
    }
    return [monitor, way_in]
