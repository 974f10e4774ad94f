"""Terminal and JSON views of a local platform's status and of monitoring outcomes."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from mlspec.views.style import Style

if TYPE_CHECKING:
    from mlspec.app.operations import MonitorOutcome, PlatformStatus


def render_status_text(status: PlatformStatus, style: Style) -> str:
    """Feature store, models and servers, one block each."""
    lines = [style(f"environment {status.environment}", "bold")]
    for event in status.events:
        lines.append(f"  event: {event}")
    feast = status.feature_store
    lines.append("feature store (Feast):")
    if feast:
        views, services = len(feast.get("feature_views", [])), len(feast.get("feature_services", []))
        lines.append(
            f"  applied: {views} views, {services} services;"
            f" online store materialized until {feast.get('materialized_until', '-')}"
        )
    else:
        lines.append("  not applied")
    lines.append("models (MLflow registry):")
    for model in status.models:
        champion, challenger = model.get("champion") or "-", model.get("challenger") or "-"
        lines.append(
            f"  {model['model']:<24} champion=v{champion}  challenger=v{challenger}"
            f"  trained on {model.get('device') or '-'}"
        )
    if not status.models:
        lines.append("  none trained")
    lines.append("servers (Open Inference Protocol v2):")
    for server in status.servers:
        health = style("ready", "green") if server.ready else style("DOWN", "red")
        lines.append(f"  {server.deployment:<24} {health}  {server.endpoint or '-'}  pid {server.pid or '-'}")
        if server.grpc:
            lines.append(f"    grpc: {server.grpc} (the Open Inference Protocol's GRPCInferenceService)")
        if server.ca_file:
            lines.append(f"    tls: trust the environment's CA {server.ca_file} (curl --cacert ...)")
        rollout = server.rollout or {}
        weights = rollout.get("weights") or {}
        for variant in server.variants:
            weight = weights.get(variant["name"])
            lines.append(
                f"    {variant['name']:<10} v{variant['version']:<4} alias={variant.get('alias') or '-':<11}"
                f" weight={'-' if weight is None else f'{weight}%'}  sha256 {variant['sha256'][:12]}…"
                f"  device {server.device(variant)}"
            )
        if rollout.get("strategy"):
            reason = f" ({rollout['reason']})" if rollout.get("reason") else ""
            lines.append(f"    rollout: {rollout['strategy']}, phase {rollout.get('phase', '-')}{reason}")
        if server.held_back:
            lines.append(f"    {style('held back', 'yellow')}: {server.held_back}")
    if not status.servers:
        lines.append("  none running")
    if status.batch:
        lines.append("batch scoring (KFP local runner):")
    for job in status.batch:
        schedule = f"schedule '{job['schedule']}' (UTC)" if job.get("schedule") else "on apply and mlspec score"
        lines.append(f"  {job['deployment']:<24} {job['entities']} -> {job['sink']}, {schedule}")
        last = job.get("last_run")
        if last:
            missing = f", {last['missing_features']} without features" if last.get("missing_features") else ""
            lines.append(
                f"    last run {last.get('finished_at', '-')}: {last.get('rows')} rows{missing} with "
                f"{last.get('model')} v{last.get('model_version')} in {last.get('seconds')} s on {last.get('device')}"
                f" -> {last.get('location') or last.get('sink')}"
            )
        else:
            lines.append("    " + style("not run yet", "yellow"))
    if status.edge:
        lines.append("edge packages (signed manifest, onnxruntime):")
    for package in status.edge:
        lines.extend(_edge_lines(package, style))
    return "\n".join(lines)


def _edge_lines(package: dict[str, Any], style: Style) -> list[str]:
    name = package["deployment"]
    if not package.get("built"):
        return [f"  {name:<24} " + style("not built yet", "yellow")]
    kind = "int8" if str(package.get("quantized")) == "true" else "full precision"
    size = f"{package.get('size_bytes')} bytes" + (
        f" (full model {package['source_bytes']})" if package.get("source_bytes") else ""
    )
    drop = package.get("accuracy_drop")
    worst = f" ({package['worst_metric']})" if package.get("worst_metric") else ""
    accuracy = f", max accuracy drop {float(drop):.4g}{worst}" if drop not in (None, "") else ""
    verdict = (
        style("signature ok", "green")
        if package.get("signature_ok")
        else style(f"INVALID: {package.get('problem')}", "red")
    )
    return [
        f"  {name:<24} {package.get('model')} v{package.get('model_version')} {kind}, {size}{accuracy}; {verdict}",
        f"    {package.get('tarball')}",
    ]


def status_json(status: PlatformStatus) -> str:
    """The status as JSON."""
    return json.dumps(asdict(status), indent=2, sort_keys=True, default=str)


def render_monitor_text(outcomes: list[MonitorOutcome], style: Style) -> str:
    """One line per monitored Deployment, plus where its reports are."""
    if not outcomes:
        return "no Deployment with drift monitoring or a due batch schedule is applied"
    lines = []
    for outcome in outcomes:
        if outcome.action in ("score", "score-failed"):  # a scheduled batch run
            mark = style("scoring failed", "red") if outcome.failed else style("scored", "green")
        elif outcome.action == "rollout-audited":  # a cluster controller's decisions, now in the audit log
            mark = style("rollout audited", "green")
        elif outcome.drift is None:
            mark = style("not checked", "yellow")
        else:
            mark = style("drift", "yellow") if outcome.drifted else style("ok", "green")
        lines.append(f"{outcome.deployment}: {mark}: {outcome.message}")
        drift: dict[str, Any] = outcome.drift or {}
        for feature in drift.get("features", []):
            flag = " <- drifted" if feature["drifted"] else ""
            lines.append(
                f"    {feature['feature']:<28} {feature['method']} {feature['score']:.4f}"
                f" (threshold {feature['threshold']}){flag}"
            )
        if drift.get("html_report"):
            lines.append(f"    report: {drift['html_report']}")
        lines.extend(f"    {event}" for event in outcome.events)
    return "\n".join(lines)
