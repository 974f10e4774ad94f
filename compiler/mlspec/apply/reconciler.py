"""Apply a plan through a target, one resource at a time, recording each result in state as it completes.

Dependants of a resource that failed are skipped; independent resources still
apply. State is written after the target succeeds and before the next resource
starts, so a crash at any point leaves state that is true, and the next apply
converges (targets apply idempotently). One hash-chained audit record closes
every apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mlspec.failpoints import failpoint
from mlspec.plan.model import Plan
from mlspec.plan.planner import Desired
from mlspec.resolve.graph import ResolvedGraph
from mlspec.state.base import StateStore, now
from mlspec.state.model import AuditRecord, ResourceState
from mlspec.targets.base import Target, TargetError

Status = Literal["applied", "failed", "skipped"]


@dataclass(frozen=True)
class ChangeResult:
    """What happened to one planned change."""

    ref: str
    action: str
    status: Status
    error: str = ""
    location: str = ""


@dataclass(frozen=True)
class ApplyResult:
    """Every change's result and the audit record written."""

    environment: str
    results: tuple[ChangeResult, ...]
    audit: AuditRecord | None

    @property
    def ok(self) -> bool:
        """True when nothing failed or was skipped."""
        return all(r.status == "applied" for r in self.results)


def apply_plan(
    plan: Plan,
    desired: dict[str, Desired],
    graph: ResolvedGraph,
    state: StateStore,
    target: Target,
    *,
    actor: str,
    revision: str,
    progress: Callable[[str], None] = lambda _: None,
) -> ApplyResult:
    """Apply every pending change of ``plan`` in order."""
    env = plan.environment
    results: list[ChangeResult] = []
    failed: set[str] = set()
    pending = plan.pending
    applied = dict(state.read(env).resources)  # kept current as changes land, instead of re-reading per change
    owners = {path: ref for ref, want in desired.items() for path in want.artifacts}
    for position, change in enumerate(pending, start=1):
        upstream = _upstream(change.ref, graph)
        blocked = sorted(upstream & failed) if change.action != "delete" else []
        if blocked:
            failed.add(change.ref)
            results.append(
                ChangeResult(change.ref, change.action, "skipped", f"depends on failed {', '.join(blocked)}")
            )
            progress(f"[{position}/{len(pending)}] skip   {change.ref} (depends on failed {', '.join(blocked)})")
            continue
        previous = applied.get(change.ref)
        progress(f"[{position}/{len(pending)}] {change.action:<6} {change.ref}")
        failpoint("apply.before_target")
        try:
            artifacts = {} if change.action == "delete" else dict(desired[change.ref].artifacts)
            keep = frozenset(path for path, owner in owners.items() if owner != change.ref)
            target_ids = target.apply(change, artifacts, previous, keep)
        except TargetError as exc:
            failed.add(change.ref)
            where = _location(change.ref, graph, exc.path)
            message = f"{exc}; {exc.hint}" if exc.hint else str(exc)
            results.append(ChangeResult(change.ref, change.action, "failed", message, where))
            progress(f"[{position}/{len(pending)}] FAILED {change.ref}: {message} ({where})")
            continue
        failpoint("apply.after_target")
        # The resource and its audit record are written in one transaction: both or neither.
        entry = (actor, revision, plan.plan_hash, {
            "type": "change", "ref": change.ref, "action": change.action, "status": "applied",
            "classification": change.classification, "fingerprint": change.fingerprint, "target_ids": target_ids,
        })  # fmt: skip
        if change.action == "delete":
            state.delete(env, change.ref, entry)
            applied.pop(change.ref, None)
        else:
            resource = ResourceState(
                change.ref, change.fingerprint, change.spec, dict(change.artifacts), target_ids, revision, now(), actor
            )
            state.put(env, resource, entry)
            applied[change.ref] = resource
        record_follow_ups(target, applied, state, env, (actor, revision, plan.plan_hash), cause=change.ref)
        failpoint("apply.after_state")
        results.append(ChangeResult(change.ref, change.action, "applied"))
    record = {
        "type": "apply",
        "summary": plan.counts(),
        "changes": [{"ref": r.ref, "action": r.action, "status": r.status, "error": r.error} for r in results],
        "live": {ref: r.fingerprint for ref, r in sorted(applied.items())},
        "serving": {
            ref: served_model(r.spec, r.target_ids)
            for ref, r in sorted(applied.items())
            if ref.startswith("Deployment/")
        },
    }
    audit = state.append_audit(env, actor, revision, plan.plan_hash, record) if results else None
    return ApplyResult(env, tuple(results), audit)


def record_follow_ups(
    target: Target,
    applied: dict[str, ResourceState],
    state: StateStore,
    env: str,
    provenance: tuple[str, str, str],
    *,
    cause: str,
) -> None:
    """Record what applying ``cause`` did to other applied resources (a new model version re-scored by a batch
    Deployment, re-packaged for the edge...), so their state stays true and the next plan sees no drift."""
    drain = getattr(target, "drain_follow_ups", None)
    for ref, ids in (drain() if drain is not None else {}).items():
        if ref in applied and ref != cause:
            record = {"type": "follow-up", "ref": ref, "cause": cause, "target_ids": ids}
            update_target_ids(applied, state, env, ref, ids, entry=(*provenance, record))


def update_target_ids(
    applied: dict[str, ResourceState],
    state: StateStore,
    env: str,
    ref: str,
    ids: dict[str, str],
    *,
    entry: tuple[str, str, str, dict[str, Any]],
) -> None:
    """Merge ``ids`` into the applied resource ``ref``'s target ids and write it with the audit ``entry``
    (actor, revision, plan hash, record) in one transaction, as apply does."""
    previous = applied[ref]
    resource = dataclasses.replace(previous, target_ids={**previous.target_ids, **ids}, applied_at=now())
    state.put(env, resource, entry)
    applied[ref] = resource


def served_model(spec: dict[str, Any], target_ids: dict[str, str] | None = None) -> str:
    """``name/version`` or ``name@alias``, with the versions each variant serves where the target knows them."""
    model = spec.get("spec", {}).get("model", {})
    version = model.get("version")
    served = f"{model.get('name')}/{version}" if version else f"{model.get('name')}@{model.get('alias')}"
    versions = (target_ids or {}).get("versions")
    return f"{served} ({versions})" if versions else served


def _upstream(ref: str, graph: ResolvedGraph) -> set[str]:
    if ref == graph.environment.ref:  # the environment's shared artifacts aggregate every resource
        return set(graph.order)
    return graph.upstream(ref)


def _location(ref: str, graph: ResolvedGraph, path: tuple[str | int, ...] = ()) -> str:
    """Where a failed change's cause is in its spec: the field ``path`` names, else the document."""
    spec = graph.resources.get(ref) or (graph.environment if ref == graph.environment.ref else None)
    if spec is None:
        return ref
    return str(spec.document.locate(path) if path else spec.document.location)
