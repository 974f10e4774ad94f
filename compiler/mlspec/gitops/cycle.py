"""One reconcile cycle: fetch the branch; apply a new commit or refuse it; find (and repair) drift; monitor.

A commit that is new (neither the last one applied nor one already refused) is checked
and applied: its signature first where the environment requires signed commits, then
validation, policies and the plan. A commit that fails any of these is refused once,
and the environment stays on the last good commit. Failures (fetch, apply, repair)
are retried by the loop with a capped exponential backoff; refusals are not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from mlspec.errors import MlspecError
from mlspec.git.runner import GitError
from mlspec.gitops import usecases
from mlspec.gitops.context import CycleContext
from mlspec.gitops.events import CycleResult, Event, Failure, Refusal, describe
from mlspec.gitops.loop import backoff
from mlspec.gitops.monitoring import MonitoringSchedule
from mlspec.gitops.repair import repair_drift


class Cycle:
    """One pass over the environment; ``run`` is called under the work folder's lock.

    ``interval`` overrides the applied commit's ``reconcile.interval``; ``backoff_base``
    and ``backoff_cap`` shape the delay after a failed cycle.
    """

    def __init__(
        self,
        context: CycleContext,
        schedule: MonitoringSchedule,
        *,
        interval: float | None = None,
        backoff_base: float = 2.0,
        backoff_cap: float = 300.0,
    ) -> None:
        self.context = context
        self.schedule = schedule
        self.interval = interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._history_loaded = False

    def run(self, stopping: Callable[[], bool] = lambda: False) -> CycleResult:
        """Fetch; apply a new commit, or find (and repair) drift; run monitoring when due."""
        context, source = self.context, self.context.source
        events: list[Event] = []
        status = context.reload()
        try:
            tip = source.fetch()
        except GitError as exc:
            events.append(Event("fetch-failed", f"fetch of {source.branch} failed: {exc.message}"))
            return self._finish(events, failed=True)
        status.branch_commit = tip
        self._load_history()
        failed = False
        new = tip not in (status.applied, status.refused)
        if new and not stopping():
            failed = not self._apply_commit(tip, events)
        if not failed and not (new and status.applied == tip) and status.applied and not stopping():
            failed = not repair_drift(context, events)
        if not failed and status.applied and not stopping():
            self.schedule.run_if_due(status, lambda: source.graph(status.applied), source.project, events)
        return self._finish(events, failed=failed)

    def _apply_commit(self, tip: str, events: list[Event]) -> bool:
        """Check and apply a new commit. False when it failed (retry); a refusal is not a failure."""
        context, source = self.context, self.context.source
        status = context.status
        previous = status.applied
        short = tip[:12]
        anchor = source.env_spec(previous) if previous else None
        try:
            source.checkout(tip)
            try:
                project = source.project()
            except MlspecError as exc:
                source.verify(tip, anchor, None)
                raise Refusal(exc.message) from None
            with project.session(context.environment) as session:
                resolution = session.resolution
                spec = resolution.graph.env.spec if resolution.graph is not None else None
                source.remember(tip, resolution.graph if resolution.ok else None)
                source.verify(tip, anchor, spec)
                if spec is None or not resolution.ok:
                    raise Refusal(_spec_errors(resolution.diagnostics, context.environment))
                result, applied = usecases.apply(
                    session, refresh=spec.self_heals, allow_destroy=context.allow_destroy,
                    who=context.actor, progress=context.progress,
                )  # fmt: skip
            if result.plan is None:
                raise Refusal(_spec_errors(result.diagnostics, context.environment))
            if applied is not None and not applied.ok:
                bad = [r for r in applied.results if r.status != "applied"]
                detail = "; ".join(f"{r.ref}: {r.status}: {r.error}" for r in bad[:3])
                raise Failure(f"{len(bad)} change(s) failed or skipped ({detail})")
        except Refusal as refusal:
            self._refuse(tip, previous, refusal, events)
            return True
        except Failure as exc:
            context.fail(tip, f"commit {short}: apply failed: {exc}", events)
            return False
        except GitError as exc:
            context.fail(tip, f"commit {short}: checkout failed: {exc.message}", events)
            return False
        except Exception as exc:  # target errors, locks, the file system: retried
            context.fail(tip, f"commit {short}: apply failed: {describe(exc)}", events)
            return False
        count = sum(1 for r in applied.results if r.status == "applied") if applied is not None else 0
        message = f"commit {short}: applied {count} change{'s' if count != 1 else ''}"
        if applied is None:
            message = f"commit {short}: applied (nothing to change)"
        status.applied, status.applied_at = tip, _now()
        status.refused, status.refused_reason, status.failures, status.last_error = None, "", 0, ""
        status.drift = []
        seq = applied.audit.seq if applied is not None and applied.audit is not None else None
        context.journal.record(project, "applied", tip, message, {"applied_changes": count, "apply_audit": seq})
        events.append(Event("applied", message, tip))
        return True

    def _refuse(self, tip: str, previous: str | None, refusal: Refusal, events: list[Event]) -> None:
        context = self.context
        status = context.status
        message = f"commit {tip[:12]}: refused: {refusal.reason}"
        status.refused, status.refused_reason = tip, refusal.reason
        status.failures, status.last_error = 0, ""
        if previous is not None:
            context.source.checkout(previous)  # stay on the last good commit (and record into its state)
        with contextlib.suppress(MlspecError):
            context.record("refused", tip, message, {"reason": refusal.reason, **refusal.details})
        events.append(Event("refused", message, tip))

    def _load_history(self) -> None:
        """The audit log is the durable record of what was applied and refused; status.json only mirrors it."""
        if self._history_loaded:
            return
        self._history_loaded = True
        try:
            project = self.context.source.project()
        except MlspecError:
            return  # nothing checked out yet: nothing was applied from this clone
        history = self.context.journal.history(project)
        status = self.context.status
        status.applied, status.refused, status.refused_reason = (
            history.applied, history.refused, history.refused_reason,
        )  # fmt: skip

    def _finish(self, events: list[Event], *, failed: bool) -> CycleResult:
        context = self.context
        status = context.status
        if not failed:
            status.failures, status.last_error = 0, ""
        elif not any(e.kind == "failed" for e in events):  # a fetch failure: the steps count their own
            status.failures += 1
            status.last_error = next((e.message for e in events if e.kind == "fetch-failed"), status.last_error)
        status.updated_at = _now()
        context.save()
        if failed:
            delay = backoff(status.failures, self.backoff_base, self.backoff_cap)
        else:
            delay = self.schedule.next_delay(status, lambda: context.source.graph(status.applied), self._interval())
        return CycleResult(
            context.environment, status.branch_commit, status.applied, tuple(events),
            status.refused if status.refused == status.branch_commit else None, failed, tuple(status.drift), delay,
        )  # fmt: skip

    def _interval(self) -> float:
        """--interval, else the applied commit's ``reconcile.interval``, else 60 s."""
        if self.interval is not None:
            return self.interval
        from mlspec.spec.base import duration_seconds

        spec = self.context.source.env_spec(self.context.status.applied)
        return float(duration_seconds(spec.reconcile.interval if spec is not None else "60s"))


def _now() -> str:
    from mlspec.state.base import now

    return now()


def _spec_errors(diagnostics: Any, environment: str) -> str:
    errors = [d for d in diagnostics if d.severity == "error"]
    if not errors:
        return f"environment '{environment}' does not resolve at this commit"
    first = errors[0]
    return f"{len(errors)} spec error(s) ({first.location}: {first.code}: {first.message})"
