"""Pin every InferenceService to the exact model version it serves, when it is applied.

The kserve renderer never bakes an alias into a path: an InferenceService that serves
``fraud-detector@champion`` is rendered with the alias in an annotation and no ``storageUri``.
Before the object is applied, the alias is resolved in the registry, and the object gets the
version's folder in the artifact store (``storageUri``), the version number and the model's
sha256 (``mlspec.dev/model-sha256``, which the serving container checks after download). A
pinned version gets its sha256 the same way. A version that was never published to the store
(no ``mlspec.storage_uri`` tag), or one published to another folder, is refused.

The GitOps hand-off (``mlspec render --pin``) pins the same way before the files are committed, so what Argo CD
syncs names exact versions too; there, a model with no version at all (nothing trained in the environment yet)
leaves its InferenceServices out (:func:`pin_or_wait`) instead of failing the whole hand-off.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Protocol

from mlspec.render.kserve import (
    ALIAS_ANNOTATION,
    MODEL_NAME_ANNOTATION,
    SHA256_ANNOTATION,
    STORE_ANNOTATION,
    VARIANTS_ANNOTATION,
    VERSION_ANNOTATION,
)
from mlspec.render.kserve_runtime import SHA256_VARIABLE, VARIANTS_VARIABLE
from mlspec.runtime.object_store import kserve_storage_uri
from mlspec.targets.base import TargetError

MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the version(s) the runtime serves


class NoVersionYet(TargetError):
    """The model has no registered version at all: no pipeline run has trained it in this environment yet."""


class AliasMissing(TargetError):
    """The model has versions, but the alias points at none of them."""


@dataclass(frozen=True)
class ServedVersion:
    """A registered version as serving needs it."""

    version: str
    sha256: str
    storage_uri: str  # the ``mlspec.storage_uri`` tag the register step set; "" when never published
    quality: str = ""  # the ``mlspec.quality`` tag: better | worse | unchecked against the champion offline


class VersionLookup(Protocol):
    """Finds a registered version by alias or number (``MlflowServer.served_version``)."""

    def served_version(self, model: str, *, alias: str | None = None, version: str | None = None) -> ServedVersion:
        """The version, or TargetError when the model, alias or version does not exist."""
        ...


def pin_model_versions(objects: list[dict[str, Any]], registry: VersionLookup | None) -> list[dict[str, Any]]:
    """``objects`` with every InferenceService pinned to its exact version (copies; others unchanged)."""
    return [_pin(obj, registry) if obj.get("kind") == "InferenceService" else obj for obj in objects]


@dataclass(frozen=True)
class Unpinned:
    """An InferenceService the hand-off could not pin: its name, the Deployment it serves, why, and whether it
    only waits for a first version (left out) or is an error."""

    name: str
    deployment: str
    reason: str
    waiting: bool


def pin_or_wait(
    objects: list[dict[str, Any]], registry: VersionLookup | None
) -> tuple[list[dict[str, Any]], list[Unpinned]]:
    """``objects`` pinned for the GitOps hand-off, and the InferenceServices left out (with why).

    An InferenceService whose model has no version yet is left out (it appears with the hand-off after the first
    pipeline run registers one); any other failure is reported with ``waiting`` False and the object left out too,
    so the caller can refuse the whole hand-off.
    """
    kept: list[dict[str, Any]] = []
    unpinned: list[Unpinned] = []
    for obj in objects:
        if obj.get("kind") != "InferenceService":
            kept.append(obj)
            continue
        meta = obj.get("metadata") or {}
        deployment = str((meta.get("labels") or {}).get("app.kubernetes.io/name", meta.get("name", "")))
        try:
            kept.append(_pin(obj, registry))
        except NoVersionYet as exc:
            unpinned.append(Unpinned(str(meta.get("name", "")), deployment, str(exc), waiting=True))
        except TargetError as exc:
            unpinned.append(Unpinned(str(meta.get("name", "")), deployment, str(exc), waiting=False))
    return kept, unpinned


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
    if VARIANTS_ANNOTATION in annotations:
        variants = json.loads(annotations[VARIANTS_ANNOTATION])
        return _pin_variants(obj, name, model, store, variants=variants, registry=registry)
    alias, pinned = annotations.get(ALIAS_ANNOTATION), annotations.get(VERSION_ANNOTATION)
    found = _published(name, model, store, registry, alias=alias if pinned is None else None, version=pinned)
    pinned_obj = copy.deepcopy(obj)
    pinned_obj["metadata"]["annotations"].update({VERSION_ANNOTATION: found.version, SHA256_ANNOTATION: found.sha256})
    predictor = pinned_obj["spec"]["predictor"]
    # on the revision's pods too: after a rollback the controller reads which version the previous revision served
    predictor["annotations"] = {**predictor.get("annotations", {}), VERSION_ANNOTATION: found.version}
    served = predictor["model"]
    served["storageUri"] = kserve_storage_uri(store, model, found.version)
    # the runtime refuses a folder whose manifest or bytes are not this digest
    env = [e for e in served.get("env", []) if e.get("name") != SHA256_VARIABLE]
    served["env"] = [*env, {"name": SHA256_VARIABLE, "value": found.sha256}]
    return pinned_obj


def _published(
    name: str, model: str, store: str, registry: VersionLookup, *, alias: str | None, version: str | None
) -> ServedVersion:
    """The version, checked to be published to this environment's store with a digest (TargetError if not)."""
    found = registry.served_version(model, alias=alias, version=version)
    expected = kserve_storage_uri(store, model, found.version)
    what = f"{model} version {found.version}" + (f" (@{alias})" if version is None else "")
    if not found.storage_uri:
        raise TargetError(
            f"{name}: {what} was never published to the artifact store {store}; "
            "register it again with a pipeline run in this environment"
        )
    if found.storage_uri != expected:
        raise TargetError(f"{name}: {what} is stored at {found.storage_uri}, not in this environment's {expected}")
    if not found.sha256:
        raise TargetError(f"{name}: {what} has no onnx_sha256 tag in the registry; refusing to serve it")
    return found


def _pin_variants(
    obj: dict[str, Any], name: str, model: str, store: str, *, variants: list[dict[str, Any]], registry: VersionLookup
) -> dict[str, Any]:
    """An InferenceService whose runtime routes between variants (A/B, shadow, blue-green): every variant's
    version is downloaded into its own folder (``storageUris``) and pinned in ``MLSPEC_VARIANTS``. A variant that
    need not exist (a shadow or green challenger) is left out when its alias points nowhere, names the stable
    version, or (``gated``) is worse than the champion offline; the runtime then serves the stable one alone."""
    served: list[dict[str, str]] = []
    for variant in variants:
        try:
            found = _published(name, model, store, registry, alias=str(variant["alias"]), version=None)
        except AliasMissing:
            if variant.get("required"):
                raise
            continue
        if not variant.get("required") and (
            any(v["version"] == found.version for v in served) or (variant.get("gated") and found.quality == "worse")
        ):
            continue
        entry = {"name": str(variant["name"]), "alias": str(variant["alias"]), "version": found.version}
        served.append({**entry, "sha256": found.sha256})
    pinned_obj = copy.deepcopy(obj)
    annotations = pinned_obj["metadata"]["annotations"]
    annotations[VERSION_ANNOTATION] = served[0]["version"]
    annotations[SHA256_ANNOTATION] = served[0]["sha256"]
    predictor = pinned_obj["spec"]["predictor"]
    predictor["annotations"] = {**predictor.get("annotations", {}), VERSION_ANNOTATION: served[0]["version"]}
    predictor["storageUris"] = [
        {"uri": kserve_storage_uri(store, model, v["version"]), "mountPath": f"{MODEL_DIR}/{v['name']}"} for v in served
    ]
    container = predictor["model"]
    env = [e for e in container.get("env", []) if e.get("name") not in (SHA256_VARIABLE, VARIANTS_VARIABLE)]
    container["env"] = [*env, {"name": VARIANTS_VARIABLE, "value": json.dumps(served, sort_keys=True)}]
    return pinned_obj


def served_folders(pinned: dict[str, Any]) -> list[tuple[str, str]]:
    """(folder under the model directory, version) for each version a pinned InferenceService downloads:
    ``("", version)`` for one model, ``(variant, version)`` per variant of a runtime that routes between them."""
    annotations = pinned["metadata"]["annotations"]
    env = {e.get("name"): e.get("value") for e in pinned["spec"]["predictor"]["model"].get("env", [])}
    if VARIANTS_VARIABLE in env:
        return [(str(v["name"]), str(v["version"])) for v in json.loads(str(env[VARIANTS_VARIABLE]))]
    return [("", str(annotations[VERSION_ANNOTATION]))]
