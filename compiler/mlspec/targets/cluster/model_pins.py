"""Pin every InferenceService to the exact model version it serves, when it is applied.

The kserve renderer never bakes an alias into a path: an InferenceService that serves
``fraud-detector@champion`` is rendered with the alias in an annotation and no ``storageUri``.
Before the object is applied, the alias is resolved in the registry, and the object gets the
version's folder in the artifact store (``storageUri``), the version number and the model's
sha256 (``mlspec.dev/model-sha256``, which the serving container checks after download). A
pinned version gets its sha256 the same way. A version that was never published to the store
(no ``mlspec.storage_uri`` tag), or one published to another folder, is refused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

from mlspec.render.kserve import (
    ALIAS_ANNOTATION,
    MODEL_NAME_ANNOTATION,
    SHA256_ANNOTATION,
    STORE_ANNOTATION,
    VERSION_ANNOTATION,
)
from mlspec.render.kserve_runtime import SHA256_VARIABLE
from mlspec.runtime.object_store import kserve_storage_uri
from mlspec.targets.base import TargetError


@dataclass(frozen=True)
class ServedVersion:
    """A registered version as serving needs it."""

    version: str
    sha256: str
    storage_uri: str  # the ``mlspec.storage_uri`` tag the register step set; "" when never published


class VersionLookup(Protocol):
    """Finds a registered version by alias or number (``MlflowServer.served_version``)."""

    def served_version(self, model: str, *, alias: str | None = None, version: str | None = None) -> ServedVersion:
        """The version, or TargetError when the model, alias or version does not exist."""
        ...


def pin_model_versions(objects: list[dict[str, Any]], registry: VersionLookup | None) -> list[dict[str, Any]]:
    """``objects`` with every InferenceService pinned to its exact version (copies; others unchanged)."""
    return [_pin(obj, registry) if obj.get("kind") == "InferenceService" else obj for obj in objects]


def _pin(obj: dict[str, Any], registry: VersionLookup | None) -> dict[str, Any]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    model, store = annotations.get(MODEL_NAME_ANNOTATION), annotations.get(STORE_ANNOTATION)
    if not model or not store:
        return obj  # not rendered by mlspec's kserve renderer
    name = f"InferenceService {obj['metadata'].get('namespace', '')}/{obj['metadata'].get('name', '')}"
    if registry is None:
        raise TargetError(
            f"{name} serves {model}: resolving its version needs the registry; "
            "set targets.registry.tracking_uri for this environment"
        )
    alias, pinned = annotations.get(ALIAS_ANNOTATION), annotations.get(VERSION_ANNOTATION)
    found = registry.served_version(model, alias=alias if pinned is None else None, version=pinned)
    expected = kserve_storage_uri(store, model, found.version)
    what = f"{model} version {found.version}" + (f" (@{alias})" if pinned is None else "")
    if not found.storage_uri:
        raise TargetError(
            f"{name}: {what} was never published to the artifact store {store}; "
            "register it again with a pipeline run in this environment"
        )
    if found.storage_uri != expected:
        raise TargetError(f"{name}: {what} is stored at {found.storage_uri}, not in this environment's {expected}")
    if not found.sha256:
        raise TargetError(f"{name}: {what} has no onnx_sha256 tag in the registry; refusing to serve it")
    pinned_obj = copy.deepcopy(obj)
    pinned_obj["metadata"]["annotations"].update({VERSION_ANNOTATION: found.version, SHA256_ANNOTATION: found.sha256})
    served = pinned_obj["spec"]["predictor"]["model"]
    served["storageUri"] = expected
    # the runtime refuses a folder whose manifest or bytes are not this digest
    env = [e for e in served.get("env", []) if e.get("name") != SHA256_VARIABLE]
    served["env"] = [*env, {"name": SHA256_VARIABLE, "value": found.sha256}]
    return pinned_obj
