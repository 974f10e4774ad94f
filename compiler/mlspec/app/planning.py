"""Plan one environment: render, diff against state (read only), and the policy findings beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlspec.app.options import PlanOptions
from mlspec.app.paths import output_dir, runs_engines
from mlspec.app.targets import make_target
from mlspec.diagnostics import Diagnostic
from mlspec.errors import MlspecError
from mlspec.git.info import actor as current_actor
from mlspec.plan.model import Plan
from mlspec.plan.planner import Desired, desired_state, make_plan
from mlspec.policy.findings import Finding
from mlspec.resolve.graph import ResolvedGraph
from mlspec.targets.output_dir import OutputDirTarget

if TYPE_CHECKING:
    from pathlib import Path

    from mlspec.app.project import Project
    from mlspec.app.session import EnvironmentSession
    from mlspec.state.base import StateStore
    from mlspec.state.model import EnvironmentState


@dataclass(frozen=True)
class PlanResult:
    """A plan with what it was made from; ``plan`` is None when the specs have errors.

    ``findings`` are the environment's policy findings (denies, warnings, waivers),
    the same the plan records; ``blocking`` are those that make apply refuse it.
    """

    plan: Plan | None
    graph: ResolvedGraph | None
    desired: dict[str, Desired]
    diagnostics: tuple[Diagnostic, ...]
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> list[Finding]:
        """Policy denies that stop an apply."""
        return [f for f in self.findings if f.blocking]

    @property
    def refused(self) -> bool:
        """True when apply would refuse this plan (a blocking finding) or there is no plan."""
        return self.plan is None or bool(self.blocking)


def plan_session(session: EnvironmentSession, options: PlanOptions, *, operation: str = "plan") -> PlanResult:
    """Render the session's environment and diff it against state; the findings come from the session.

    Refuses (AccessDenied, audited) when ``options.who`` may not ``operation`` (plan or apply) here.
    """
    from mlspec import access

    project, resolution = session.project, session.resolution
    if resolution.graph is None or not resolution.ok:
        return PlanResult(None, None, {}, resolution.diagnostics, ())
    rendered = session.render()
    if rendered is None or not rendered.ok:
        problems = rendered.diagnostics if rendered else resolution.diagnostics
        return PlanResult(None, resolution.graph, {}, problems, ())
    graph = resolution.graph
    desired = desired_state(graph, rendered.artifacts)
    store = session.store
    revision = options.revision or session.revision
    actor = current_actor(options.who, project.root)
    access.check_allowed(project, graph, store, actor=actor, operation=operation, revision=revision)
    state = store.read(session.environment)
    drifted = set(_drifted(project, graph, store, desired)) if options.refresh else set()
    tampered = _tampered_models(project, state) if runs_engines(graph) else {}  # every plan, --refresh or not
    findings = session.findings
    plan = make_plan(
        graph, desired, state, project=project.name, revision=revision, prune=options.prune,
        drifted=frozenset(drifted | set(tampered)), drift_reasons=tampered,
    )  # fmt: skip
    plan = _with_findings(plan, findings)
    return PlanResult(plan, graph, desired, (), findings)


def _with_findings(plan: Plan, findings: tuple[Finding, ...]) -> Plan:
    import dataclasses

    return dataclasses.replace(plan, findings=findings)


def read_saved_plan(path: Path) -> Plan:
    """A plan saved by ``mlspec plan --out``; UsageError when the file is not one this version reads."""
    import json

    from mlspec.errors import UsageError

    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} is not a valid mlspec plan: {exc}") from None


def plan_environment(
    project: Project, environment: str, options: PlanOptions | None = None, *, operation: str = "plan"
) -> PlanResult:
    """Plan ``environment`` in a session of its own (one validation, resolution, policy evaluation, store)."""
    options = options or PlanOptions()
    with project.session(environment, today=options.today) as session:
        return plan_session(session, options, operation=operation)


def engine_steps(session: EnvironmentSession, result: PlanResult) -> dict[str, list[str]]:
    """What the local engines will do per pending change (empty for environments that hand off to GitOps)."""
    if result.plan is None or result.graph is None or not runs_engines(result.graph):
        return {}
    applied = session.store.read(result.graph.name).resources
    target = make_target(session.project, result.graph, result.desired, applied)
    steps: dict[str, list[str]] = {}
    for change in result.plan.pending:
        wanted = [s for s in target.plan(change, applied.get(change.ref)) if not s.startswith(("write ", "remove "))]
        if wanted:
            steps[change.ref] = wanted
    return steps


def _tampered_models(project: Project, state: EnvironmentState) -> dict[str, str]:
    """TrainingPipelines whose registered model file no longer holds the bytes they registered, and why: the
    update retrains (a new, verified version), and no server serves the altered file meanwhile."""
    from mlspec.targets.local.model_files import model_file_problem

    tampered = {}
    for ref, resource in state.resources.items():
        problem = model_file_problem(resource.target_ids, project.root) if resource.kind == "TrainingPipeline" else None
        if problem is not None:
            tampered[ref] = problem
    return tampered


def _drifted(project: Project, graph: ResolvedGraph, store: StateStore, desired: dict[str, Desired]) -> list[str]:
    applied = store.read(graph.name).resources
    target = make_target(project, graph, desired, applied)
    return [ref for ref, resource in applied.items() if not target.healthy(resource)]


Drift = dict[str, dict[str, tuple[str | None, str | None]]]


def drift(session: EnvironmentSession) -> Drift:
    """Per resource, the artifacts whose live content differs from what was applied: path -> (applied, live)."""
    graph = session.graph
    if graph is None:
        raise MlspecError(f"environment '{session.environment}' does not resolve; run mlspec check")
    target = OutputDirTarget(output_dir(session.project, graph))
    report: Drift = {}
    for ref, resource in session.store.read(session.environment).resources.items():
        live = target.read_live(resource)
        changed: dict[str, tuple[str | None, str | None]] = {}
        for path, applied in resource.artifacts.items():
            if live[path] != applied:
                changed[path] = (applied, live[path])
        if changed:
            report[ref] = changed
    return report
