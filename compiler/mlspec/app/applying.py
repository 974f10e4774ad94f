"""Apply and destroy one environment: lock, plan (or verify a saved plan), refuse what may not go, reconcile.

The environment's session carries everything: the specs are validated once,
resolved once, their policies evaluated once, and one state store is opened and
locked for the whole operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlspec.app.options import ApplyOptions, DestroyOptions, PlanOptions
from mlspec.app.planning import PlanResult, plan_session
from mlspec.app.targets import make_target
from mlspec.apply.reconciler import ApplyResult, apply_plan
from mlspec.errors import MlspecError, PlanRefused
from mlspec.git.info import actor as current_actor
from mlspec.plan.model import Plan
from mlspec.plan.planner import destroy_plan
from mlspec.resolve.graph import ResolvedGraph
from mlspec.targets.local.supervision import supervised

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.app.session import EnvironmentSession

Approve = Callable[[Plan], bool]
Progress = Callable[[str], None]


def apply_session(
    session: EnvironmentSession,
    options: ApplyOptions,
    *,
    approve: Approve = lambda _: True,
    progress: Progress = lambda _: None,
) -> tuple[PlanResult, ApplyResult | None]:
    """Lock the session's environment, plan (or verify a saved plan), and apply it.

    On a local-tier environment the engines run too (Feast, training, serving)
    unless ``options.engines`` is False: then only the artifacts are written.
    Raises PlanRefused (with the blocking findings as data) when policy, staleness,
    a dirty tree or a production delete forbids the plan.
    """
    from mlspec import access

    project, environment, store = session.project, session.environment, session.store
    holder = current_actor(options.plan.who, project.root)
    if session.graph is not None:  # a proven identity (CI token, signed HEAD) acts under its own name
        holder = access.acting(project, session.graph, store, holder)
    with store.locked(environment, holder, "apply", wait=options.lock_timeout):
        result = plan_session(session, _as(options, holder), operation="apply")
        plan = result.plan
        if plan is None or result.graph is None:
            return result, None
        if result.blocking:
            raise PlanRefused(
                f"{len(result.blocking)} policy finding(s) deny this change in '{environment}'",
                reason="policy",
                findings=tuple(result.blocking),
                hint="run 'mlspec check' to see them; fix them or file a Waiver",
            )
        if options.saved is not None:
            _check_saved(options.saved, plan)
            plan = options.saved
        _check_clean(plan, result.graph, options.allow_dirty)
        _check_destroy(plan, result.graph, options.allow_destroy)
        if not plan.empty:
            access.check_approval(
                project, result.graph, store, actor=holder, revision=plan.revision, plan_hash=plan.plan_hash
            )
        if plan.empty or not approve(plan):
            return result, None
        target = make_target(
            project, result.graph, result.desired, store.read(environment).resources,
            engines=options.engines, direct=options.direct, progress=progress,
        )  # fmt: skip
        # every process this apply starts is marked; what a killed apply left running is finished first
        with supervised(project.root, environment, progress):
            applied = apply_plan(
                plan, result.desired, result.graph, store, target, actor=holder, revision=plan.revision,
                progress=progress,
            )  # fmt: skip
        return result, applied


def _as(options: ApplyOptions, holder: str) -> PlanOptions:
    import dataclasses

    return dataclasses.replace(options.plan, who=holder)


def apply_environment(
    project: Project,
    environment: str,
    options: ApplyOptions | None = None,
    *,
    approve: Approve = lambda _: True,
    progress: Progress = lambda _: None,
) -> tuple[PlanResult, ApplyResult | None]:
    """``apply_session`` in a session of its own."""
    options = options or ApplyOptions()
    with project.session(environment, today=options.plan.today) as session:
        return apply_session(session, options, approve=approve, progress=progress)


def destroy_environment(
    project: Project,
    environment: str,
    options: DestroyOptions | None = None,
    *,
    approve: Approve = lambda _: True,
    progress: Progress = lambda _: None,
) -> tuple[Plan | None, ApplyResult | None]:
    """Delete everything applied in an environment: servers stop, artifacts go, state empties.

    Registered models and experiment runs stay in the registry (they are history, not
    configuration). Production needs ``options.allow_destroy``.
    """
    from mlspec import access

    options = options or DestroyOptions()
    with project.session(environment) as session:
        store = session.store
        holder = current_actor(options.who, project.root)
        if session.graph is not None:
            holder = access.acting(project, session.graph, store, holder)
        with store.locked(environment, holder, "destroy", wait=options.lock_timeout):
            graph = session.graph
            if graph is None:
                raise MlspecError(f"environment '{environment}' does not resolve; run mlspec check")
            state = store.read(environment)
            plan = destroy_plan(graph, state, project=project.name, revision=session.revision)
            access.check_allowed(project, graph, store, actor=holder, operation="destroy", revision=plan.revision)
            _check_destroy(plan, graph, options.allow_destroy)
            if plan.empty or not approve(plan):
                return plan, None
            target = make_target(project, graph, {}, state.resources, progress=progress)
            applied = apply_plan(
                plan, {}, graph, store, target, actor=holder, revision=plan.revision, progress=progress
            )
            return plan, applied


def _check_clean(plan: Plan, graph: ResolvedGraph, allow_dirty: bool) -> None:
    """Only committed specs reach shared environments: the commit in state and audit must be the whole truth."""
    if allow_dirty or graph.env.spec.tier == "local" or not plan.revision.endswith("+dirty"):
        return
    raise PlanRefused(
        f"the working tree has uncommitted changes; '{graph.name}' is applied from commits only "
        f"(at {plan.revision.removesuffix('+dirty')[:12]} plus local edits)",
        reason="dirty",
        hint="commit or stash the changes, or pass --allow-dirty",
    )


def _check_saved(saved: Plan, fresh: Plan) -> None:
    if saved.environment != fresh.environment:
        raise PlanRefused(f"the plan is for '{saved.environment}', not '{fresh.environment}'", reason="wrong-env")
    if saved.state_serial != fresh.state_serial:
        raise PlanRefused(
            f"stale plan: state changed since it was made (serial {saved.state_serial} -> {fresh.state_serial})",
            reason="stale",
            hint="run 'mlspec plan' again",
        )
    if saved.desired_hash != fresh.desired_hash or saved.changes != fresh.changes:
        raise PlanRefused(
            "stale plan: the specs or their rendered artifacts changed since it was made",
            reason="stale",
            hint="run 'mlspec plan' again",
        )


def _check_destroy(plan: Plan, graph: ResolvedGraph, allow_destroy: bool) -> None:
    if graph.env.spec.tier != "production" or allow_destroy:
        return
    doomed = [c.ref for c in plan.pending if c.action == "delete" and c.kind == "Deployment"]
    if doomed:
        raise PlanRefused(
            f"the plan deletes production Deployment(s) {', '.join(doomed)}",
            reason="destroy",
            hint="pass --allow-destroy if that is intended, or --no-prune to keep them",
        )
