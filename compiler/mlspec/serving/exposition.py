"""The model server's metrics in the Prometheus text format: per variant, the rollout, shadow, HTTP codes, log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from mlspec.serving import metrics as m
from mlspec.serving.metrics import ShadowStats
from mlspec.serving.router import LOADED, Arm, Router

# key -> (name, type, help) of the families every variant adds samples to
VARIANT_FAMILIES = {
    "requests": ("mlspec_requests_total", "counter", "Infer requests answered, by variant."),
    "errors": ("mlspec_request_errors_total", "counter", "Infer requests that failed (5xx)."),
    "latency": ("mlspec_request_duration_seconds", "histogram", "Infer latency from parsed request to response."),
    "weight": ("mlspec_traffic_weight_percent", "gauge", "Current share of traffic, percent."),
    "batch": ("mlspec_batch_size_rows", "histogram", "Rows per onnxruntime session.run."),
    "info": ("mlspec_model_info", "gauge", "Served variants, their version and device."),
    "loaded": ("mlspec_variant_loaded", "gauge", "1 when the variant is loaded and verified."),
    "fallback": ("mlspec_device_fallback", "gauge", "1 when the variant asked for a GPU and runs on CPU, with why."),
}
SHADOW_FAMILIES = (
    ("mlspec_shadow_requests_total", "counter", "Requests mirrored to the shadow challenger.", "requests"),
    ("mlspec_shadow_errors_total", "counter", "Mirrored requests the challenger failed.", "errors"),
    ("mlspec_shadow_mean_abs_diff", "gauge", "Mean absolute output difference, challenger vs stable.", "mean_abs_diff"),
    ("mlspec_shadow_agreement_ratio", "gauge", "Share of rows with the same decision at 0.5.", "agreement"),
)


def variant_families(
    deployment: str, arms: Mapping[str, Arm], weights: Mapping[str, float], devices: Mapping[str, dict[str, Any]]
) -> list[m.MetricFamily]:
    """The per-variant families: traffic, latency, batch sizes, weights, model info, loaded, device fallback."""
    fam = {key: m.MetricFamily(name, kind, text) for key, (name, kind, text) in VARIANT_FAMILIES.items()}
    for arm in arms.values():
        lab = m.labels(deployment=deployment, variant=arm.name, version=arm.version)
        s = arm.stats
        fam["requests"].samples.append(f"mlspec_requests_total{{{lab}}} {s.requests}")
        fam["errors"].samples.append(f"mlspec_request_errors_total{{{lab}}} {s.errors}")
        fam["latency"].samples.extend(s.latency.lines("mlspec_request_duration_seconds", lab))
        fam["weight"].samples.append(f"mlspec_traffic_weight_percent{{{lab}}} {weights.get(arm.name, 0.0):g}")
        fam["batch"].samples.extend(s.batch.lines("mlspec_batch_size_rows", lab))
        device = devices[arm.name]
        used = device["device"] or "none"
        info = m.labels(
            deployment=deployment,
            variant=arm.name,
            version=arm.version,
            alias=arm.alias,
            device=used,
            requested=device["requested_device"],
            providers=",".join(device["providers"]),
        )
        fam["info"].samples.append(f"mlspec_model_info{{{info}}} 1")
        fam["loaded"].samples.append(f"mlspec_variant_loaded{{{lab}}} {int(arm.state == LOADED)}")
        fell = m.labels(
            deployment=deployment,
            variant=arm.name,
            requested=device["requested_device"],
            device=used,
            reason=device["fallback_reason"],
        )
        fam["fallback"].samples.append(f"mlspec_device_fallback{{{fell}}} {int(device['fallback'])}")
    return list(fam.values())


def rollout_family(deployment: str, router: Router) -> m.MetricFamily:
    """The rollout's current phase (one sample, value 1)."""
    phase = m.MetricFamily("mlspec_rollout_phase", "gauge", "The rollout's current phase (value 1).")
    lab = m.labels(deployment=deployment, strategy=router.strategy, phase=router.phase)
    phase.samples.append(f"mlspec_rollout_phase{{{lab}}} 1")
    return phase


def shadow_families(deployment: str, router: Router, shadow: ShadowStats) -> list[m.MetricFamily]:
    """How the shadow challenger compares with stable (nothing unless the strategy is shadow)."""
    challenger = router.challenger
    if router.strategy != "shadow" or challenger is None:
        return []
    lab = m.labels(deployment=deployment, variant=challenger.name, version=challenger.version)
    return [
        m.MetricFamily(name, kind, text, [f"{name}{{{lab}}} {getattr(shadow, field):.9g}"])
        for name, kind, text, field in SHADOW_FAMILIES
    ]


def codes_family(deployment: str, codes: Counter[int]) -> m.MetricFamily:
    """HTTP responses by status code."""
    family = m.MetricFamily("mlspec_http_responses_total", "counter", "HTTP responses by status code.")
    family.samples.extend(
        f"mlspec_http_responses_total{{{m.labels(deployment=deployment, code=str(code))}}} {count}"
        for code, count in sorted(codes.items())
    )
    return family


def auth_family(deployment: str, method: str, outcomes: Counter[str]) -> m.MetricFamily:
    """Authentication checks by outcome (ok, missing, invalid, expired, unknown_key, forbidden)."""
    family = m.MetricFamily(
        "mlspec_auth_requests_total", "counter", "Requests checked for credentials, by outcome (never the credential)."
    )
    for outcome in ("ok", "missing", "invalid", "expired", "unknown_key", "forbidden"):
        lab = m.labels(deployment=deployment, method=method, outcome=outcome)
        family.samples.append(f"mlspec_auth_requests_total{{{lab}}} {outcomes[outcome]}")
    return family


def grpc_family(deployment: str, codes: Counter[tuple[str, str]]) -> m.MetricFamily:
    """gRPC calls by method and status code."""
    family = m.MetricFamily("mlspec_grpc_responses_total", "counter", "gRPC calls answered, by method and status code.")
    family.samples.extend(
        f"mlspec_grpc_responses_total{{{m.labels(deployment=deployment, method=method, code=code)}}} {count}"
        for (method, code), count in sorted(codes.items())
    )
    return family


def log_family(deployment: str, written: int) -> m.MetricFamily:
    """Rows written to the request log."""
    rows = m.MetricFamily("mlspec_request_log_rows_total", "counter", "Rows written to the request log.")
    rows.samples.append(f"mlspec_request_log_rows_total{{{m.labels(deployment=deployment)}}} {written}")
    return rows


def exposition(
    deployment: str,
    arms: Mapping[str, Arm],
    router: Router,
    *,
    devices: Mapping[str, dict[str, Any]],
    shadow: ShadowStats,
    codes: Counter[int],
    log_rows: int | None,
    auth: tuple[str, Counter[str]] | None = None,
    grpc_codes: Counter[tuple[str, str]] | None = None,
) -> bytes:
    """The Prometheus exposition of every metric (``log_rows`` None: no request log, no log family; ``auth``: the
    authentication method and its outcome counts, None when callers are not checked)."""
    families = [
        *variant_families(deployment, arms, router.weights(), devices),
        rollout_family(deployment, router),
        *shadow_families(deployment, router, shadow),
        codes_family(deployment, codes),
    ]
    if log_rows is not None:
        families.append(log_family(deployment, log_rows))
    if auth is not None:
        families.append(auth_family(deployment, *auth))
    if grpc_codes:  # gRPC calls by method and status code, once there was one
        families.append(grpc_family(deployment, grpc_codes))
    return m.render(families)
