"""The one place gitops calls the plan/apply workflow (and the day-2 operations).

The reconciler and promotion use only what this module offers, so a change to the
workflow's API is adapted here and nowhere else in ``mlspec.gitops``. The workflow is
imported lazily: ``mlspec reconcile --help`` and ``mlspec promote --help`` stay quick.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mlspec.gitops.events import Refusal

if TYPE_CHECKING:
    from mlspec.apply.reconciler import ApplyResult
    from mlspec.apply.workflow import PlanResult
    from mlspec.project import Project, ValidationResult
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.state.store import StateStore
    from mlspec.targets.local.operations import MonitorOutcome


def apply(
    project: Project,
    environment: str,
    *,
    validation: ValidationResult | None,
    refresh: bool,
    allow_destroy: bool,
    who: str,
    progress: Callable[[str], None],
) -> tuple[PlanResult, ApplyResult | None]:
    """Plan and apply ``environment``; a plan the workflow refuses raises :class:`Refusal` with its reason.

    With ``validation`` (the project's, already computed), a refusal by policy names the denies.
    """
    from mlspec.apply.workflow import PlanRefused, apply_environment

    try:
        return apply_environment(
            project, environment, refresh=refresh, allow_destroy=allow_destroy, who=who, progress=progress
        )
    except PlanRefused as exc:
        if validation is None:
            raise Refusal(exc.message) from None
        raise Refusal(*_refusal_reason(project, environment, exc.message, validation)) from None


def plan(project: Project, environment: str, validation: ValidationResult) -> PlanResult:
    """The plan for ``environment`` against its recorded state, from an already computed validation."""
    from mlspec.apply.workflow import plan_environment

    return plan_environment(project, environment, validation=validation)


def plan_live(project: Project, environment: str) -> PlanResult:
    """The plan against the live target (``refresh``): what differs from what was applied."""
    from mlspec.apply.workflow import plan_environment

    return plan_environment(project, environment, refresh=True)


def runs_engines(graph: ResolvedGraph) -> bool:
    """Whether the environment runs mlspec's local engines (training, serving, monitoring)."""
    from mlspec.apply.workflow import runs_engines as engines

    return engines(graph)


@contextlib.contextmanager
def state_store(project: Project) -> Iterator[StateStore]:
    """The project's state store, closed when the block ends."""
    from mlspec.apply.workflow import state_store as open_store

    store = open_store(project)
    try:
        yield store
    finally:
        store.close()


def project_at(project: Project, revision: str) -> contextlib.AbstractContextManager[Project]:
    """The project as committed at ``revision``, in a temporary folder, sharing the real project's state."""
    from mlspec.apply.workflow import project_at as at

    return at(project, revision)


def monitor(project: Project, environment: str, progress: Callable[[str], None]) -> list[MonitorOutcome]:
    """One drift-monitoring pass over the environment's monitored Deployments."""
    from mlspec.targets.local.operations import monitor as run_monitoring

    return run_monitoring(project, environment, progress=progress)


def _refusal_reason(project: Project, environment: str, message: str, validation: Any) -> tuple[str, dict[str, Any]]:
    """A refused plan's reason: the policy denies, named, when policies refused it."""
    if "policy" not in message:  # the workflow's refusal carries no findings yet: recompute them
        return message, {}
    checked = project.check([environment], validation=validation)
    blocking = [f for f in checked.findings if f.blocking]
    if not blocking:
        return message, {}
    named = "; ".join(f"{f.policy} on {f.resource}: {f.message}" for f in blocking[:3])
    more = f"; +{len(blocking) - 3} more" if len(blocking) > 3 else ""
    reason = f"{len(blocking)} policy deny ({named}{more})"
    findings = [{"policy": f.policy, "resource": f.resource, "message": f.message} for f in blocking]
    return reason, {"findings": findings}
