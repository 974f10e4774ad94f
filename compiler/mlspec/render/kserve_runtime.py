"""mlspec's model server as KServe's runtime: the ServingRuntime of a namespace, and what each InferenceService
hands it (see :mod:`mlspec.serving.kserve`, which runs in the container).

Every online Deployment on KServe is served by mlspec's serving image (by digest), not by Triton: Triton cannot
open mlspec's sealed models, checks no sha256, and knows neither the Deployment's API keys nor its request log.
The runtime loads the version KServe's storage initializer downloaded, checks it is the pinned one, decrypts it
in memory, and serves the Open Inference Protocol over REST (8080) and gRPC (8081).
"""

from __future__ import annotations

import json
from typing import Any

from mlspec.render.secret_refs import secret_source
from mlspec.runtime.context import reference_variable
from mlspec.spec.deployment import OnlineDeploymentSpec
from mlspec.spec.environment import KubernetesTarget

RUNTIME_NAME = "mlspec"
MODEL_FORMAT = {"name": "onnx", "version": "1"}
HTTP_PORT, GRPC_PORT = 8080, 8081
SETTINGS_VARIABLE = "MLSPEC_SERVING"  # read by mlspec.serving.kserve
SHA256_VARIABLE = "MLSPEC_MODEL_SHA256"
# the images' non-root user, read-only, no privilege: every container mlspec runs from its images
RESTRICTED: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
ROUTED = ("ab", "shadow", "blue_green")  # rollouts the runtime's router runs between variants
VARIANTS_VARIABLE = "MLSPEC_VARIANTS"  # the pinned variants a runtime routes between (A/B, shadow, blue-green)


def serving_runtime(image: str, k8s: KubernetesTarget, object_labels: dict[str, str]) -> dict[str, Any]:
    """The namespace's ServingRuntime: mlspec's serving image, non-root, read-only, both protocols."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": RUNTIME_NAME, "namespace": k8s.namespace, "labels": object_labels},
        "spec": {
            "supportedModelFormats": [{**MODEL_FORMAT, "autoSelect": False}],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": image,
                    "command": ["python", "-m", "mlspec.serving.kserve"],
                    "args": [
                        "--model-name={{.Name}}",
                        "--model-dir=/mnt/models",
                        f"--http-port={HTTP_PORT}",
                        f"--grpc-port={GRPC_PORT}",
                    ],
                    "ports": [{"containerPort": HTTP_PORT, "name": "http1", "protocol": "TCP"}],
                    "env": [{"name": "TMPDIR", "value": "/tmp"}],
                    "securityContext": dict(RESTRICTED),
                    # the only writable place: its configuration and the (sealed) request log
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}},
                    "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": HTTP_PORT}},
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def runtime_settings(online: OnlineDeploymentSpec, lookup: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the runtime container reads from ``MLSPEC_SERVING``: the Deployment's serving settings (``lookup``:
    where entity keys are looked up, :mod:`mlspec.render.entity_lookup`)."""
    drift = online.monitoring.drift
    rollout = online.rollout
    settings: dict[str, Any] = {
        # A/B, shadow and blue-green: the runtime routes between its variants with the laptop's router; a canary
        # is KServe's split between revisions that each serve one version
        "rollout": rollout.model_dump(mode="json") if rollout.strategy in ROUTED else {"strategy": "direct"},
        "device": online.runtime.device,
        "fallback": online.runtime.fallback,
        "batching": online.runtime.batching,
        "log_sample_rate": drift.sample_rate if drift is not None and online.monitoring.log_requests else 0.0,
    }
    if lookup is not None:
        settings["lookup"] = lookup
    auth = online.auth
    if auth.required and auth.method == "api_key" and auth.api_keys is not None:
        # checked by the runtime itself (the mesh cannot check keys); OIDC and mTLS are the mesh's
        settings["auth"] = {
            "method": "api_key",
            "api_key_env": reference_variable(auth.api_keys),
            "open_routes": list(auth.open_routes),
        }
    return settings


def runtime_env(online: OnlineDeploymentSpec, lookup: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The InferenceService container's environment: the settings, and the API keys from their Secret."""
    env: list[dict[str, Any]] = [
        {"name": SETTINGS_VARIABLE, "value": json.dumps(runtime_settings(online, lookup), sort_keys=True)}
    ]
    auth = online.auth
    source = secret_source(auth.api_keys) if auth.api_keys is not None else None
    if auth.required and auth.method == "api_key" and auth.api_keys is not None and source is not None:
        secret, key = source
        env.append(
            {"name": reference_variable(auth.api_keys), "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        )
    return env
