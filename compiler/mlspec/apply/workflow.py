"""Plan and apply for one environment: render, diff against state, check, lock, reconcile, audit.

``plan_environment`` only reads state. ``apply_environment`` takes the
environment's lock, re-plans (or loads a saved plan and refuses it when stale),
refuses destructive or policy-failing plans, and reconciles through the target.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.apply.reconciler import ApplyResult, apply_plan
from mlspec.diagnostics import Diagnostic
from mlspec.errors import MlspecError
from mlspec.git.info import Revision
from mlspec.git.info import actor as current_actor
from mlspec.git.info import revision as current_revision
from mlspec.plan.model import Plan
from mlspec.plan.planner import Desired, desired_state, destroy_plan, make_plan
from mlspec.policy.findings import Finding
from mlspec.resolve.graph import ResolvedGraph
from mlspec.state.model import ResourceState
from mlspec.targets.base import Target
from mlspec.targets.output_dir import OutputDirTarget

if TYPE_CHECKING:
    from mlspec.project import Project, ValidationResult
    from mlspec.state.store import StateStore
    from mlspec.targets.local.paths import LocalPaths


class PlanRefused(MlspecError):
    """The plan may not be applied (stale, destructive without permission, or failing policy)."""


@dataclass(frozen=True)
class PlanResult:
    """A plan with what it was made from; ``plan`` is None when specs or policies have errors."""

    plan: Plan | None
    graph: ResolvedGraph | None
    desired: dict[str, Desired]
    diagnostics: tuple[Diagnostic, ...]
    findings: tuple[Finding, ...]

    @property
    def blocking(self) -> list[Finding]:
        """Policy denies that stop an apply."""
        return [f for f in self.findings if f.blocking]


def state_store(project: Project) -> StateStore:
    """The project's state: the backend its project file chooses (SQLite by default, or PostgreSQL)."""
    from mlspec.state.store import open_store

    return open_store(project.settings.state, project.home, project.name)


def project_revision(project: Project, graph: ResolvedGraph) -> Revision:
    """The commit the specs come from; the environment's own folders and the state never count as changes."""
    state = project.home / project.settings.state.path
    journals = tuple(state.with_name(state.name + suffix) for suffix in ("", "-wal", "-shm", "-journal"))
    return current_revision(project.root, (project.home / ".mlspec", data_dir(project, graph), *journals))


def data_dir(project: Project, graph: ResolvedGraph) -> Path:
    """The environment's local folder: applied artifacts and, on a local tier, the engines' stores."""
    return project.home / (graph.env.spec.data_dir or f".mlspec/{graph.name}")


def output_dir(project: Project, graph: ResolvedGraph) -> Path:
    """Where the output target writes an environment's artifacts."""
    return data_dir(project, graph) / "output"


def runs_engines(graph: ResolvedGraph) -> bool:
    """A local-tier environment brings the platform up on this machine; the others hand artifacts to GitOps."""
    return graph.env.spec.tier == "local"


def local_paths(project: Project, graph: ResolvedGraph) -> LocalPaths:
    """The local platform's folders for an environment."""
    from mlspec.targets.local.paths import LocalPaths

    encryption = graph.env.spec.encryption
    return LocalPaths(graph.name, project.root, data_dir(project, graph), encryption.kms_key, encryption.signing_key)


def make_target(
    project: Project,
    graph: ResolvedGraph,
    desired: dict[str, Desired],
    applied: dict[str, ResourceState],
    *,
    engines: bool = True,
    direct: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Target:
    """The target an environment applies through.

    A local tier runs the local platform. Other tiers write the output folder that
    GitOps (Argo CD) syncs; with ``direct`` they also apply to their cluster
    themselves: Kubernetes server-side apply, KFP runs and schedules, MLflow registry.
    """
    rendered = {path: a for want in desired.values() for path, a in want.artifacts.items()}
    if engines and runs_engines(graph):
        from mlspec.targets.local.platform import LocalPlatformTarget

        return LocalPlatformTarget(local_paths(project, graph), graph, rendered, applied, progress)
    if direct:
        if graph.env.spec.targets.kubernetes is None:
            raise MlspecError(
                f"'{graph.name}' has no targets.kubernetes to apply to directly",
                hint="add targets.kubernetes (namespace, context), or apply without --direct",
            )
        from mlspec.targets.cluster.platform import cluster_target

        return cluster_target(project.name, graph, output_dir(project, graph), rendered, progress)
    return OutputDirTarget(output_dir(project, graph))


def plan_environment(
    project: Project,
    environment: str,
    *,
    prune: bool = True,
    refresh: bool = False,
    revision: str | None = None,
    validation: ValidationResult | None = None,
    who: str | None = None,
    operation: str = "plan",
) -> PlanResult:
    """Validate, resolve, render, and diff against state (read only). Policies are `check`'s and apply's job.

    Refuses (AccessDenied, audited) when ``who`` may not ``operation`` (plan or apply) here; see mlspec.access.
    """
    validation = validation or project.validate()
    resolution = project.resolve(environment, validation)
    if resolution.graph is None or not resolution.ok:
        return PlanResult(None, None, {}, resolution.diagnostics, ())
    _, rendered = project.render(environment, resolution=resolution)
    if rendered is None or not rendered.ok:
        problems = rendered.diagnostics if rendered else resolution.diagnostics
        return PlanResult(None, resolution.graph, {}, problems, ())
    graph = resolution.graph
    desired = desired_state(graph, rendered.artifacts)
    store = state_store(project)
    try:
        from mlspec import access

        revision = revision or str(project_revision(project, graph))
        access.check_allowed(
            project, graph, store, actor=current_actor(who, project.root), operation=operation, revision=revision
        )
        state = store.read(environment)
        drifted = frozenset(_drifted(project, graph, store, desired)) if refresh else frozenset()
    finally:
        store.close()
    plan = make_plan(
        graph, desired, state, project=project.name, revision=revision, prune=prune, drifted=drifted,
    )  # fmt: skip
    return PlanResult(plan, graph, desired, (), ())


def engine_steps(project: Project, result: PlanResult) -> dict[str, list[str]]:
    """What the local engines will do per pending change (empty for environments that hand off to GitOps)."""
    if result.plan is None or result.graph is None or not runs_engines(result.graph):
        return {}
    store = state_store(project)
    try:
        applied = store.read(result.graph.name).resources
    finally:
        store.close()
    target = make_target(project, result.graph, result.desired, applied)
    steps: dict[str, list[str]] = {}
    for change in result.plan.pending:
        wanted = [s for s in target.plan(change, applied.get(change.ref)) if not s.startswith(("write ", "remove "))]
        if wanted:
            steps[change.ref] = wanted
    return steps


def _drifted(project: Project, graph: ResolvedGraph, store: StateStore, desired: dict[str, Desired]) -> list[str]:
    applied = store.read(graph.name).resources
    target = make_target(project, graph, desired, applied)
    return [ref for ref, resource in applied.items() if not target.healthy(resource)]


def drift(project: Project, environment: str) -> dict[str, dict[str, tuple[str | None, str | None]]]:
    """Per resource, the artifacts whose live content differs from what was applied: path -> (applied, live)."""
    resolution = project.resolve(environment)
    if resolution.graph is None:
        raise MlspecError(f"environment '{environment}' does not resolve; run mlspec check")
    store = state_store(project)
    try:
        target = OutputDirTarget(output_dir(project, resolution.graph))
        report: dict[str, dict[str, tuple[str | None, str | None]]] = {}
        for ref, resource in store.read(environment).resources.items():
            live = target.read_live(resource)
            changed: dict[str, tuple[str | None, str | None]] = {}
            for path, applied in resource.artifacts.items():
                if live[path] != applied:
                    changed[path] = (applied, live[path])
            if changed:
                report[ref] = changed
        return report
    finally:
        store.close()


def apply_environment(
    project: Project,
    environment: str,
    *,
    saved: Plan | None = None,
    prune: bool = True,
    refresh: bool = False,
    allow_destroy: bool = False,
    lock_timeout: float = 0.0,
    who: str | None = None,
    approve: Callable[[Plan], bool] = lambda _: True,
    progress: Callable[[str], None] = lambda _: None,
    revision: str | None = None,
    engines: bool = True,
    allow_dirty: bool = False,
    direct: bool = False,
) -> tuple[PlanResult, ApplyResult | None]:
    """Lock the environment, plan (or verify a saved plan), and apply it.

    On a local-tier environment the engines run too (Feast, training, serving)
    unless ``engines`` is False: then only the artifacts are written.
    """
    store = state_store(project)
    holder = current_actor(who, project.root)
    try:
        store.acquire(environment, holder, "apply", wait=lock_timeout)
        try:
            validation = project.validate()
            checked = project.check([environment], validation=validation)
            result = plan_environment(
                project, environment, prune=prune, refresh=refresh, revision=revision, validation=validation,
                who=holder, operation="apply",
            )  # fmt: skip
            result = PlanResult(result.plan, result.graph, result.desired, result.diagnostics, checked.findings)
            plan = result.plan
            if plan is None or result.graph is None:
                return result, None
            if result.blocking:
                raise PlanRefused(
                    f"{len(result.blocking)} policy finding(s) deny this change in '{environment}'",
                    hint="run 'mlspec check' to see them; fix them or file a Waiver",
                )
            if saved is not None:
                _check_saved(saved, plan)
                plan = saved
            _check_clean(plan, result.graph, allow_dirty)
            _check_destroy(plan, result.graph, allow_destroy)
            if not plan.empty:
                from mlspec import access

                access.check_approval(
                    project, result.graph, store, actor=holder, revision=plan.revision, plan_hash=plan.plan_hash
                )
            if plan.empty or not approve(plan):
                return result, None
            target = make_target(
                project, result.graph, result.desired, store.read(environment).resources,
                engines=engines, direct=direct, progress=progress,
            )  # fmt: skip
            applied = apply_plan(
                plan, result.desired, result.graph, store, target,
                actor=holder, revision=plan.revision, progress=progress,
            )  # fmt: skip
            return result, applied
        finally:
            store.release(environment)
    finally:
        store.close()


def destroy_environment(
    project: Project,
    environment: str,
    *,
    allow_destroy: bool = False,
    lock_timeout: float = 0.0,
    who: str | None = None,
    approve: Callable[[Plan], bool] = lambda _: True,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[Plan | None, ApplyResult | None]:
    """Delete everything applied in an environment: servers stop, artifacts go, state empties.

    Registered models and experiment runs stay in the registry (they are history, not
    configuration). Production needs ``allow_destroy``.
    """
    store = state_store(project)
    holder = current_actor(who, project.root)
    try:
        store.acquire(environment, holder, "destroy", wait=lock_timeout)
        try:
            resolution = project.resolve(environment)
            if resolution.graph is None:
                raise MlspecError(f"environment '{environment}' does not resolve; run mlspec check")
            graph = resolution.graph
            state = store.read(environment)
            plan = destroy_plan(graph, state, project=project.name, revision=str(project_revision(project, graph)))
            from mlspec import access

            access.check_allowed(project, graph, store, actor=holder, operation="destroy", revision=plan.revision)
            _check_destroy(plan, graph, allow_destroy)
            if plan.empty or not approve(plan):
                return plan, None
            target = make_target(project, graph, {}, state.resources, progress=progress)
            applied = apply_plan(
                plan, {}, graph, store, target, actor=holder, revision=plan.revision, progress=progress
            )
            return plan, applied
        finally:
            store.release(environment)
    finally:
        store.close()


def _check_clean(plan: Plan, graph: ResolvedGraph, allow_dirty: bool) -> None:
    """Only committed specs reach shared environments: the commit in state and audit must be the whole truth."""
    if allow_dirty or graph.env.spec.tier == "local" or not plan.revision.endswith("+dirty"):
        return
    raise PlanRefused(
        f"the working tree has uncommitted changes; '{graph.name}' is applied from commits only "
        f"(at {plan.revision.removesuffix('+dirty')[:12]} plus local edits)",
        hint="commit or stash the changes, or pass --allow-dirty",
    )


def _check_saved(saved: Plan, fresh: Plan) -> None:
    if saved.environment != fresh.environment:
        raise PlanRefused(f"the plan is for '{saved.environment}', not '{fresh.environment}'")
    if saved.state_serial != fresh.state_serial:
        raise PlanRefused(
            f"stale plan: state changed since it was made (serial {saved.state_serial} -> {fresh.state_serial})",
            hint="run 'mlspec plan' again",
        )
    if saved.desired_hash != fresh.desired_hash or saved.changes != fresh.changes:
        raise PlanRefused(
            "stale plan: the specs or their rendered artifacts changed since it was made",
            hint="run 'mlspec plan' again",
        )


def _check_destroy(plan: Plan, graph: ResolvedGraph, allow_destroy: bool) -> None:
    if graph.env.spec.tier != "production" or allow_destroy:
        return
    doomed = [c.ref for c in plan.pending if c.action == "delete" and c.kind == "Deployment"]
    if doomed:
        raise PlanRefused(
            f"the plan deletes production Deployment(s) {', '.join(doomed)}",
            hint="pass --allow-destroy if that is intended, or --no-prune to keep them",
        )


@contextlib.contextmanager
def project_at(project: Project, revision: str) -> Iterator[Project]:
    """The project as it was at a git revision, sharing the current state, caches and outputs (for rollback)."""
    from mlspec.project import Project as ProjectClass

    with tempfile.TemporaryDirectory(prefix="mlspec-rollback-") as tmp:
        try:
            archive = subprocess.run(
                ["git", "-C", str(project.root), "archive", "--format=tar", revision],
                capture_output=True, check=True, timeout=120,
            )  # fmt: skip
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            detail = (
                exc.stderr.decode(errors="replace").strip()
                if isinstance(exc, subprocess.CalledProcessError)
                else str(exc)
            )
            raise MlspecError(
                f"cannot read revision '{revision}': {detail}", hint="give a commit, tag or branch"
            ) from None
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        prefix = Path(tmp) / project.root.relative_to(_git_root(project.root))
        # the old specs, but the current project's state, caches and outputs
        yield dataclasses.replace(ProjectClass.open(prefix), state_root=project.home)


def _git_root(path: Path) -> Path:
    out = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip()).resolve()
