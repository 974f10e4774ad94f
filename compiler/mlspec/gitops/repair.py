"""Drift between the live target and the last applied commit: found, then repaired or only reported."""

from __future__ import annotations

from mlspec.gitops import usecases
from mlspec.gitops.context import CycleContext
from mlspec.gitops.events import Event, EventKind, describe


def repair_drift(context: CycleContext, events: list[Event]) -> bool:
    """Compare the live target with the last applied commit; repair or report, per ``reconcile.self_heal``.

    False when the check or a repair failed (retried with backoff). A drift that is only
    reported is reported once, until the set of drifted resources changes.
    """
    status = context.status
    commit = status.applied
    assert commit is not None
    try:
        context.source.checkout(commit)
        project = context.source.project()
        result = usecases.plan_live(project, context.environment)
    except Exception as exc:
        context.fail(commit, f"drift check at {commit[:12]} failed: {describe(exc)}", events)
        return False
    if result.plan is None or result.graph is None:
        context.fail(commit, f"drift check at {commit[:12]} failed: the applied commit no longer plans", events)
        return False
    pending = result.plan.pending
    drifted = [c.ref for c in pending]
    if not drifted:
        status.drift = []
        return True
    kinds = {c.ref: drift_kind(c.action, c.reasons) for c in pending}
    if not result.graph.env.spec.self_heals:
        if sorted(drifted) != sorted(status.drift):  # report each new drift once
            for ref in drifted:
                message = f"{kinds[ref]} in {ref}: reported (self_heal is off)"
                events.append(Event("drift", message, commit, (ref,)))
            context.journal.record(project, "drift", commit, f"{len(drifted)} resource(s) drifted: reported", {
                "resources": {ref: kinds[ref] for ref in drifted}, "action": "reported",
            })  # fmt: skip
        status.drift = drifted
        return True
    try:
        with project.session(context.environment) as session:
            _, applied = usecases.apply(
                session, refresh=True, allow_destroy=context.allow_destroy, who=context.actor,
                progress=context.progress,
            )  # fmt: skip
    except Exception as exc:
        status.drift = drifted
        context.fail(commit, f"self-heal at {commit[:12]} failed: {describe(exc)}", events)
        return False
    healed = {r.ref for r in applied.results if r.status == "applied"} if applied is not None else set()
    left = [ref for ref in drifted if ref not in healed]
    for ref in drifted:
        outcome = "self-healed" if ref in healed else "repair failed"
        kind: EventKind = "self-healed" if ref in healed else "failed"
        events.append(Event(kind, f"{kinds[ref]} in {ref}: {outcome}", commit, (ref,)))
    context.journal.record(project, "self-healed", commit, f"{len(healed)} drifted resource(s) self-healed", {
        "resources": {ref: kinds[ref] for ref in drifted}, "healed": sorted(healed), "failed": left,
        "apply_audit": applied.audit.seq if applied is not None and applied.audit is not None else None,
    })  # fmt: skip
    status.drift = left
    if left:
        status.failures += 1
        status.last_error = f"self-heal left {len(left)} resource(s) drifted"
        return False
    return True


def drift_kind(action: str, reasons: tuple[str, ...]) -> str:
    """How a pending change shows drift: changed outside mlspec, missing, or not in the commit."""
    if any(r.startswith("drift:") for r in reasons):
        return "drift"
    return {"create": "missing", "delete": "not in the commit"}.get(action, "out of sync")
