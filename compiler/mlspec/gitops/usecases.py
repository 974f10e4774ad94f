"""The one place gitops calls the application layer's modules; everything else goes through the Project it holds.

Applying a commit (with a refusal turned into the reconciler's :class:`Refusal`), the live plan, the
rollback snapshot and the engines question are adapted here, so a change of the application layer's
module API touches this file only. The application layer is imported lazily: ``mlspec reconcile --help``
and ``mlspec promote --help`` stay quick.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from mlspec.gitops.events import Refusal

if TYPE_CHECKING:
    from mlspec.app.planning import PlanResult
    from mlspec.app.project import Project
    from mlspec.app.session import EnvironmentSession
    from mlspec.apply.reconciler import ApplyResult
    from mlspec.errors import PlanRefused
    from mlspec.resolve.graph import ResolvedGraph


def apply(
    session: EnvironmentSession,
    *,
    refresh: bool,
    allow_destroy: bool,
    who: str,
    progress: Callable[[str], None],
) -> tuple[PlanResult, ApplyResult | None]:
    """Plan and apply the session's environment; a refused plan raises :class:`Refusal` with its reason as data."""
    from mlspec.app.applying import apply_session
    from mlspec.app.options import ApplyOptions, PlanOptions
    from mlspec.errors import PlanRefused

    options = ApplyOptions(plan=PlanOptions(refresh=refresh, who=who), allow_destroy=allow_destroy)
    try:
        return apply_session(session, options, progress=progress)
    except PlanRefused as exc:
        raise Refusal(*refusal_reason(exc)) from None


def plan_live(project: Project, environment: str) -> PlanResult:
    """The plan against the live target (``refresh``): what differs from what was applied."""
    from mlspec.app.options import PlanOptions

    return project.plan(environment, PlanOptions(refresh=True))


def runs_engines(graph: ResolvedGraph) -> bool:
    """Whether the environment runs mlspec's local engines (training, serving, monitoring)."""
    from mlspec.app.paths import runs_engines as engines

    return engines(graph)


def project_at(project: Project, revision: str) -> AbstractContextManager[Project]:
    """The project as committed at ``revision``, in a temporary folder, sharing the real project's state."""
    from mlspec.app.rollback import project_at as at

    return at(project, revision)


def refusal_reason(exc: PlanRefused) -> tuple[str, dict[str, Any]]:
    """A refused plan's reason, from the data the refusal carries: the policy denies, named, when policy refused it."""
    blocking = exc.findings if exc.reason == "policy" else ()
    if not blocking:
        return exc.message, {}
    named = "; ".join(f"{f.policy} on {f.resource}: {f.message}" for f in blocking[:3])
    more = f"; +{len(blocking) - 3} more" if len(blocking) > 3 else ""
    reason = f"{len(blocking)} policy deny ({named}{more})"
    findings = [{"policy": f.policy, "resource": f.resource, "message": f.message} for f in blocking]
    return reason, {"findings": findings}
