"""Where a secret reference's value lives in a cluster (docs/gitops.md): ``secret://a/b`` is the Secret
``mlspec-a-b`` holding one value under the key ``value``; ``k8s://name/key`` is the key ``key`` of the Secret
``name``; ``env://`` names no Secret. In the containers the value arrives as ``MLSPEC_SECRET_<REF>``."""

from __future__ import annotations

from typing import Any

from mlspec.runtime.context import secret_variable

SINGLE_VALUE_KEY = "value"  # the key of a secret:// reference's Secret that holds one value


def secret_name(ref: str) -> str:
    """The Secret a reference names: ``secret://prod/feast`` is ``mlspec-prod-feast``, ``k8s://name/key`` ``name``."""
    if ref.startswith("k8s://"):
        return ref.removeprefix("k8s://").split("/", 1)[0]
    return "mlspec-" + secret_variable(ref).removeprefix("MLSPEC_SECRET_").lower().replace("_", "-")


def secret_source(ref: str) -> tuple[str, str] | None:
    """The Secret name and key a reference is read from in a cluster; None for ``env://`` (no Secret)."""
    if ref.startswith("k8s://"):
        return secret_name(ref), ref.removeprefix("k8s://").partition("/")[2]
    if ref.startswith("secret://"):
        return secret_name(ref), SINGLE_VALUE_KEY
    return None


def secret_env_from(ref: str) -> dict[str, Any]:
    """``envFrom`` for a ``secret://`` or ``k8s://`` reference: Secret ``mlspec-<ref>`` (``k8s://name/...``: ``name``)
    whose keys arrive as ``MLSPEC_SECRET_<REF>_<KEY>``, the variables rendered files name."""
    return {"prefix": f"{secret_variable(ref)}_", "secretRef": {"name": secret_name(ref)}}
