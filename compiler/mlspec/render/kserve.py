"""Kubernetes manifests per Deployment: KServe InferenceService, Namespace, ServiceAccount, NetworkPolicy.

Layout under ``kubernetes/`` (what an Argo CD Application syncs):

* ``namespace.yaml`` with the namespace and a default-deny NetworkPolicy;
* ``serving-runtime.yaml``: mlspec's ServingRuntime (:mod:`mlspec.render.kserve_runtime`);
* ``<deployment>.yaml`` with the ServiceAccount, the NetworkPolicy that lets
  traffic reach the model, the mesh's TLS and authentication policies, and the Deployment's InferenceService.

How each rollout runs on KServe:

* ``direct`` and ``canary``: one model per revision. A canary is KServe's own split between the revision rolled
  out before and the latest one (``canaryTrafficPercent``), moved by mlspec's rollout controller, rendered with
  its RBAC, NetworkPolicy and the PodMonitor it reads into ``rollout-controller.yaml``
  (:mod:`mlspec.render.rollout_controller`).
* ``ab``, ``shadow`` and ``blue_green``: the variants run inside mlspec's runtime, as on the laptop. The
  predictor downloads every variant's version (``storageUris``, one folder per variant under ``/mnt/models``,
  pinned like a single model) and the runtime's router splits, mirrors or switches between them with the
  laptop's rules: the A/B key hashes to the same variant on every replica, every replica compares shadow
  outputs, and a green variant serves only after its smoke check. The variants are listed in the
  ``mlspec.dev/variants`` annotation until they are pinned.

GPU deployments with ``fallback: cpu`` also get a CPU variant under
``kubernetes-fallback/`` (not synced by default), used when a cluster has no GPU.
Fields a target cannot honour are errors here, never silently dropped: canary
traffic splitting needs KServe's serverless mode.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mlspec.diagnostics import Diagnostic
from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.endpoint_auth import DEPLOYMENT_LABEL, mesh_policies
from mlspec.render.entity_lookup import cluster_lookup
from mlspec.render.images import recorded_image
from mlspec.render.kserve_runtime import MODEL_FORMAT, RUNTIME_NAME, runtime_env, serving_runtime
from mlspec.render.rollout_controller import NAME as ROLLOUT_NAME
from mlspec.render.rollout_controller import SCRAPE_ANNOTATIONS, rollout_controller
from mlspec.render.secret_refs import secret_name
from mlspec.render.serialize import to_yaml_documents
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.object_store import kserve_storage_uri
from mlspec.spec.deployment import (
    AbRollout,
    BlueGreenRollout,
    CanaryRollout,
    Deployment,
    OnlineDeploymentSpec,
    ShadowRollout,
)
from mlspec.spec.environment import KubernetesTarget
from mlspec.spec.validate import ParsedSpec

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODES = {"serverless": "Serverless", "raw": "RawDeployment"}
MODEL_NAME_ANNOTATION = "mlspec.dev/model-name"
ALIAS_ANNOTATION = "mlspec.dev/model-alias"  # resolved to a version when applied, never baked into a path
VERSION_ANNOTATION = "mlspec.dev/model-version"
SHA256_ANNOTATION = "mlspec.dev/model-sha256"  # of the plaintext ONNX model in storageUri
STORE_ANNOTATION = "mlspec.dev/artifact-store"
SEALED_ANNOTATION = "mlspec.dev/model-encryption"
VARIANTS_ANNOTATION = "mlspec.dev/variants"  # the variants one runtime routes between, each by alias


def labels(name: str, graph: ResolvedGraph, project: str, component: str) -> dict[str, str]:
    """The app.kubernetes.io labels every object carries."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": f"{name}-{graph.name}",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": project,
        "app.kubernetes.io/managed-by": "mlspec",
        "mlspec.dev/environment": graph.name,
    }


def _quantity(value: int | float | str) -> str:
    return str(value)


class KServeRenderer:
    """Renders the serving side of an environment for KServe on Kubernetes."""

    name: ClassVar[str] = "kubernetes"
    version: ClassVar[str] = "7"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """Manifests for every Deployment, when the environment serves on KServe."""
        out = RenderOutput()
        targets = graph.env.spec.targets
        if targets.serving != "kserve" or targets.kubernetes is None:
            return out
        k8s = targets.kubernetes
        image, missing = recorded_image(graph, "serving", context.project_root, unset_at=("spec", "targets", "serving"))
        if image is None:
            assert missing is not None
            out.diagnostics.append(missing)
            return out
        namespace = k8s.namespace
        ns_labels = {
            **labels(namespace, graph, context.project, "namespace"),
            "mlspec.dev/tier": graph.env.spec.tier,
            "istio-injection": "enabled",  # the sidecars that enforce each endpoint's TLS and authentication
        }
        out.artifacts.append(
            Artifact(
                "kubernetes/namespace.yaml",
                to_yaml_documents(
                    [
                        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": ns_labels}},
                        _default_deny(namespace, graph, context.project),
                    ]
                ),
                self.name,
                (graph.environment.ref,),
            )
        )
        runtime = serving_runtime(image, k8s, labels(RUNTIME_NAME, graph, context.project, "serving-runtime"))
        out.artifacts.append(
            Artifact(
                "kubernetes/serving-runtime.yaml", to_yaml_documents([runtime]), self.name, (graph.environment.ref,)
            )
        )
        online = [(s, s.model.spec) for s in graph.specs(Deployment) if isinstance(s.model.spec, OnlineDeploymentSpec)]
        for spec, served in online:  # batch/edge: no endpoint
            self._deployment(spec, served, graph, context, k8s=k8s, out=out)
        if k8s.serving_mode == "serverless" and any(isinstance(o.rollout, CanaryRollout) for _, o in online):
            controller = rollout_controller(
                image,
                namespace,
                k8s.prometheus,
                labels(ROLLOUT_NAME, graph, context.project, "rollout-controller"),
                graph.env.spec.targets.registry.tracking_uri,
            )
            out.artifacts.append(  # the namespace's, like the ServingRuntime: applied with the Environment
                Artifact(
                    "kubernetes/rollout-controller.yaml",
                    to_yaml_documents(controller),
                    self.name,
                    (graph.environment.ref,),
                )
            )
        return out

    def _deployment(
        self,
        spec: ParsedSpec[Deployment],
        online: OnlineDeploymentSpec,
        graph: ResolvedGraph,
        context: RenderContext,
        *,
        k8s: KubernetesTarget,
        out: RenderOutput,
    ) -> None:
        rollout = online.rollout
        if isinstance(rollout, CanaryRollout) and k8s.serving_mode == "raw":
            out.diagnostics.append(
                Diagnostic(
                    "unsupported-by-target",
                    f"KServe in raw deployment mode cannot split canary traffic; environment '{graph.name}' "
                    "sets targets.kubernetes.serving_mode: raw",
                    spec.document.locate(("spec", "rollout", "strategy")),
                    path="spec.rollout.strategy",
                    hint="use serving_mode: serverless in that environment, or a blue_green rollout",
                )
            )
            return
        sources = (spec.ref, graph.environment.ref)
        key = [graph.environment.digest, graph.fingerprint(spec.ref)]
        files = reuse(
            context, f"{self.name}/{self.version}", key, lambda: _deployment_files(spec, online, graph, context, k8s)
        )  # the runtime's image is in serving-runtime.yaml, not in these files
        out.artifacts.extend(Artifact(path, content, self.name, sources) for path, content in files.items())


def _deployment_files(
    spec: ParsedSpec[Deployment],
    online: OnlineDeploymentSpec,
    graph: ResolvedGraph,
    context: RenderContext,
    k8s: KubernetesTarget,
) -> dict[str, bytes]:
    name = spec.name
    documents: list[dict[str, Any]] = [
        _service_account(name, graph, context, k8s),
        _allow_ingress(name, k8s.namespace, graph, context, online),
        # TLS and authentication are the mesh's to enforce: without these objects every caller is served
        *mesh_policies(name, k8s.namespace, online, graph, labels(name, graph, context.project, "endpoint-security")),
    ]
    documents.append(
        _inference_service(name, spec=spec, online=online, graph=graph, context=context, k8s=k8s, gpu=True)
    )
    files = {f"kubernetes/{name}.yaml": to_yaml_documents(documents)}
    if online.runtime.device == "gpu" and online.runtime.fallback == "cpu":
        fallback = _inference_service(name, spec=spec, online=online, graph=graph, context=context, k8s=k8s, gpu=False)
        files[f"kubernetes-fallback/{name}.yaml"] = to_yaml_documents([fallback])
    return files


def runtime_variants(online: OnlineDeploymentSpec) -> list[dict[str, Any]] | None:
    """The variants one runtime serves and routes between (A/B, shadow, blue-green), as the laptop's router names
    them, each with the alias it serves and whether it must exist; None when each revision serves one model."""
    rollout = online.rollout
    if isinstance(rollout, AbRollout):  # every arm, by its alias (as on the laptop)
        return [{"name": arm.alias, "alias": arm.alias, "required": True} for arm in rollout.variants]
    if online.model.version is not None or not isinstance(rollout, (ShadowRollout, BlueGreenRollout)):
        return None  # a pinned version serves alone, as on the laptop
    stable = {"name": "stable", "alias": online.model.alias or "champion", "required": True}
    if isinstance(rollout, ShadowRollout):
        return [stable, {"name": "shadow", "alias": rollout.challenger, "required": False}]
    # a green worse than the champion offline is held back (mlspec.quality), as the laptop holds it back
    return [stable, {"name": "green", "alias": "challenger", "required": False, "gated": True}]


def _inference_service(
    isvc_name: str,
    *,
    spec: ParsedSpec[Deployment],
    online: OnlineDeploymentSpec,
    graph: ResolvedGraph,
    context: RenderContext,
    k8s: KubernetesTarget,
    gpu: bool,
) -> dict[str, Any]:
    model = spec.model
    runtime = online.runtime
    store = graph.env.spec.targets.registry.artifact_store
    version = online.model.version
    alias = online.model.alias or "champion"
    variants = runtime_variants(online)
    use_gpu = gpu and runtime.device == "gpu"
    resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": _quantity(runtime.cpu), "memory": runtime.memory},
        "limits": {"cpu": _quantity(runtime.cpu), "memory": runtime.memory},
    }
    predictor: dict[str, Any] = {
        "serviceAccountName": model.metadata.name,
        "minReplicas": online.scaling.min_replicas,
        "maxReplicas": online.scaling.max_replicas,
        "scaleMetric": online.scaling.target.metric,
        "scaleTarget": online.scaling.target.value,
        # the pods of every variant: what the mesh's TLS and authentication policies select
        "labels": {DEPLOYMENT_LABEL: spec.name},
        # where Prometheus scrapes the runtime's metrics (Istio's sidecar rewrites them to its merged metrics)
        "annotations": dict(SCRAPE_ANNOTATIONS),
    }
    rollout = online.rollout
    if isinstance(rollout, CanaryRollout):
        predictor["canaryTrafficPercent"] = rollout.steps[0]
    if use_gpu:
        count = runtime.gpu.count if runtime.gpu else 1
        resources["requests"]["nvidia.com/gpu"] = str(count)
        resources["limits"]["nvidia.com/gpu"] = str(count)
        predictor["nodeSelector"] = {"nvidia.com/gpu.present": "true"}
        predictor["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    predictor["model"] = {
        "modelFormat": dict(MODEL_FORMAT),
        "runtime": RUNTIME_NAME,  # mlspec's server: verifies the pinned sha256, opens sealed models, checks API keys
        "protocolVersion": "v2",
        "env": runtime_env(online, cluster_lookup(graph, spec.model)),
        "resources": resources,
    }
    annotations = {
        MODE_ANNOTATION: MODES[k8s.serving_mode],
        "mlspec.dev/model": f"{online.model.name}@{alias}" if not version else f"{online.model.name}/{version}",
        **served_model(online.model.name, alias, version, store.uri if store else ""),
        # the stored model.onnx is an mlspec envelope (AES-GCM) when the environment has a key; opening it is the
        # serving container's job, a stock model server cannot read it
        **({SEALED_ANNOTATION: "mlspec-envelope"} if graph.env.spec.encryption.kms_key else {}),
        "mlspec.dev/rollout": json.dumps(rollout.model_dump(mode="json"), sort_keys=True, separators=(",", ":")),
        "mlspec.dev/auth": online.auth.method if online.auth.required else "none",
        "mlspec.dev/visibility": online.endpoint.visibility,
    }
    if variants is not None:
        annotations[VARIANTS_ANNOTATION] = json.dumps(variants, sort_keys=True, separators=(",", ":"))
    if not use_gpu and runtime.device == "gpu":
        annotations["mlspec.dev/variant"] = "cpu-fallback"
    if version is not None and store is not None and variants is None:  # a pinned version: its exact folder
        predictor["model"]["storageUri"] = kserve_storage_uri(store.uri, online.model.name, version)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": isvc_name,
            "namespace": k8s.namespace,
            "labels": {
                **labels(model.metadata.name, graph, context.project, "model-server"),
                "mlspec.dev/alias": alias,
            },
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }


def served_model(model: str, alias: str, version: int | str | None, store_uri: str) -> dict[str, str]:
    """The annotations that say which model version an InferenceService serves and from which store.

    A pinned version is rendered with its exact ``storageUri``; an alias never becomes a path: the cluster
    target resolves it in the registry when it applies the object, and sets ``storageUri`` to that version's
    folder and ``mlspec.dev/model-sha256`` to its digest (:mod:`mlspec.targets.cluster.model_pins`).
    """
    served = {MODEL_NAME_ANNOTATION: model, STORE_ANNOTATION: store_uri}
    if version is not None:
        served[VERSION_ANNOTATION] = str(version)
    else:
        served[ALIAS_ANNOTATION] = alias
    return served


def _service_account(name: str, graph: ResolvedGraph, context: RenderContext, k8s: KubernetesTarget) -> dict[str, Any]:
    account: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": k8s.namespace,
            "labels": labels(name, graph, context.project, "model-server"),
        },
        "automountServiceAccountToken": False,
    }
    if k8s.image_pull_secret:
        # secret references only: the name of a Kubernetes Secret, never its value
        account["imagePullSecrets"] = [{"name": secret_name(k8s.image_pull_secret)}]
    return account


def _default_deny(namespace: str, graph: ResolvedGraph, project: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "default-deny",
            "namespace": namespace,
            "labels": labels("default-deny", graph, project, "network-policy"),
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def _allow_ingress(
    name: str, namespace: str, graph: ResolvedGraph, context: RenderContext, online: OnlineDeploymentSpec
) -> dict[str, Any]:
    sources: list[dict[str, Any]] = [{"podSelector": {}}]
    if online.endpoint.visibility != "private":
        # the serving gateway (Knative/Istio ingress) forwards outside callers
        sources.append({"namespaceSelector": {"matchLabels": {"mlspec.dev/ingress": "true"}}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{name}-allow",
            "namespace": namespace,
            "labels": labels(name, graph, context.project, "network-policy"),
        },
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": sources}],
            "egress": [
                {
                    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
                {"to": [{"podSelector": {}}]},
            ],
        },
    }
