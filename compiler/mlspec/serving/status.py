"""The rollout status: what each variant runs on, its state and traffic, and the status file it is published to."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.serving.metrics import ShadowStats
from mlspec.serving.router import Arm, Router

log = logging.getLogger("mlspec.serving")


def device_info(arm: Arm, requested_device: str) -> dict[str, Any]:
    """What ``arm`` runs on: device, requested_device, providers, fallback, fallback_reason (no model: device
    None, nothing in use)."""
    if arm.model is not None:
        return arm.model.device_info()
    return {
        "device": None,
        "requested_device": requested_device,
        "providers": [],
        "fallback": False,
        "fallback_reason": "",
    }


def shadow_summary(shadow: ShadowStats) -> dict[str, Any]:
    """How the shadow challenger compares with stable so far."""
    return {
        "requests": shadow.requests,
        "rows": shadow.rows,
        "mean_abs_diff": shadow.mean_abs_diff,
        "agreement": shadow.agreement,
        "errors": shadow.errors,
    }


def rollout_status(
    deployment: str,
    model_name: str,
    arms: Mapping[str, Arm],
    router: Router,
    *,
    devices: Mapping[str, dict[str, Any]],
    shadow: ShadowStats,
) -> dict[str, Any]:
    """The rollout status (the mlspec_rollout extension's JSON and the status file)."""
    weights = router.weights()
    return {
        "deployment": deployment,
        "model_name": model_name,
        "strategy": router.strategy,
        "phase": router.phase,
        "reason": router.reason,
        "weights": weights,
        "variants": {
            name: {
                "alias": arm.alias,
                "version": arm.version,
                "state": arm.state,
                "reason": arm.reason,
                **devices[name],
                "weight": weights.get(name, 0.0),
                "requests": arm.stats.requests,
                "errors": arm.stats.errors,
            }
            for name, arm in arms.items()
        },
        **router.details(),
        **({"shadow": shadow_summary(shadow)} if router.strategy == "shadow" else {}),
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_status_file(path: str, status: dict[str, Any]) -> None:
    """Write ``status`` to ``path`` atomically; a failure is logged, never raised (serving goes on)."""
    try:
        atomic_write(Path(path), (json.dumps(status, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        log.error("cannot write rollout status %s: %s", path, exc)
