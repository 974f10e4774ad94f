"""Project: the whole Python API, a facade over the stages and the use cases.

Example::

    from mlspec import Project
    from mlspec.app import ApplyOptions

    project = Project.open(".")
    result = project.validate()
    plan = project.plan("dev")            # the plan with the policy findings beside it
    if not plan.refused:
        project.apply("dev", ApplyOptions())

Each method delegates: the stages (load, validate, resolve, policy, render, plan)
live in their own packages; the use cases (plan, apply, destroy, rollback, day-2
operations, edge build, reports) live in ``mlspec.app``. One environment's work
runs in an ``EnvironmentSession`` that computes each stage once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec import __version__
from mlspec.app.validation import CheckResult, Resolution, ValidationResult, validate_files
from mlspec.diagnostics import Diagnostic, Location
from mlspec.errors import ProjectNotFoundError, UsageError
from mlspec.load.discovery import PROJECT_FILE, display_path, find_project_root
from mlspec.load.limits import Limits
from mlspec.load.yaml_loader import load_file
from mlspec.private import private_files
from mlspec.resolve.confinement import confinement_problems
from mlspec.resolve.graph import ResolvedGraph, environment_names, resolve_environment
from mlspec.spec.environment import Environment
from mlspec.spec.project_file import ProjectFile, ProjectSpec
from mlspec.spec.validate import specs_of, validate_document

if TYPE_CHECKING:
    from mlspec.app.applying import Approve, Progress
    from mlspec.app.governance import Baseline
    from mlspec.app.operations import MonitorOutcome, PlatformStatus
    from mlspec.app.options import ApplyOptions, DestroyOptions, PlanOptions, RehearsalOptions
    from mlspec.app.planning import Drift, PlanResult
    from mlspec.app.rehearsal import RehearsalReport
    from mlspec.app.session import EnvironmentSession
    from mlspec.app.validation import ValidationResult as Validation
    from mlspec.apply.reconciler import ApplyResult
    from mlspec.identity import Identity
    from mlspec.plan.model import Plan
    from mlspec.policy.evaluate import PolicySet
    from mlspec.policy.findings import Finding
    from mlspec.policy.testing import PolicyTestResult
    from mlspec.render.cache import RenderCache
    from mlspec.render.engine import RenderResult
    from mlspec.render.write import WriteSummary
    from mlspec.report.compliance import ComplianceReport
    from mlspec.state.base import StateStore
    from mlspec.state.checkpoint import Verification
    from mlspec.targets.images import BuiltImage


@dataclass(frozen=True)
class Project:
    """A platform repository: its root, its settings and its spec files."""

    root: Path
    settings: ProjectSpec
    name: str
    project_diagnostics: tuple[Diagnostic, ...] = field(default=())
    _caches: dict[str, object] = field(default_factory=dict, repr=False, compare=False)
    state_root: Path | None = None  # where state, caches and outputs live; differs from root only in rollback
    baseline: Baseline | None = None  # the base commit's checks a change under review is held to (governance)

    @property
    def home(self) -> Path:
        """The folder state, caches and environment outputs are relative to."""
        return self.state_root or self.root

    @classmethod
    def open(cls, path: str | Path = ".") -> Project:
        """Open the project whose mlspec.yaml is at or above ``path``."""
        start = Path(path)
        if not start.exists():
            raise UsageError(f"path does not exist: {path}")
        root = find_project_root(start)
        if root is None:
            raise ProjectNotFoundError(
                f"no {PROJECT_FILE} found in {display_path(start.resolve())} or any parent directory",
                hint="run 'mlspec init DIR' to create a project, or pass files to validate them on their own",
            )
        return cls._from_root(root)

    @classmethod
    def _from_root(cls, root: Path) -> Project:
        display = display_path(root / PROJECT_FILE)
        documents, diagnostics = load_file(root / PROJECT_FILE, display, Limits())
        settings = ProjectSpec()
        name = root.name
        if documents:
            if len(documents) > 1:
                diagnostics.append(
                    Diagnostic("invalid-value", f"{PROJECT_FILE} must hold one document", documents[1].location)
                )
            parsed, problems = validate_document(documents[0], {"Project": ProjectFile})
            diagnostics.extend(problems)
            if parsed is not None:
                settings = parsed.model.spec
                name = parsed.name
        return cls(root, settings, name, tuple(diagnostics))

    @property
    def limits(self) -> Limits:
        """Loader limits from the project settings."""
        cfg = self.settings.limits
        return Limits(cfg.max_file_bytes, cfg.max_depth, cfg.max_alias_nodes)

    def spec_files(self) -> tuple[list[Path], list[Diagnostic]]:
        """Every YAML file of the project's spec and environment folders (links out of the project refused)."""
        from mlspec.app.paths import spec_files

        return spec_files(self)

    def project_file_location(self, path: tuple[str | int, ...]) -> Location:
        """Where a key of mlspec.yaml is (its file when it cannot be found)."""
        documents, _ = load_file(self.root / PROJECT_FILE, display_path(self.root / PROJECT_FILE), Limits())
        if documents:
            return documents[0].locate(path)
        return Location(display_path(self.root / PROJECT_FILE), 1, 1)

    def validate(self) -> ValidationResult:
        """Load and validate every spec of the project, and check references between them."""
        files, problems = self.spec_files()
        result = validate_files(files, self.limits)
        diagnostics = sorted([*self.project_diagnostics, *problems, *result.diagnostics], key=Diagnostic.sort_key)
        return ValidationResult(result.specs, tuple(diagnostics), result.files + 1)

    def environments(self, validation: ValidationResult | None = None) -> list[str]:
        """Names of the environments the project defines."""
        return environment_names((validation or self.validate()).specs)

    def resolve(self, environment: str, validation: ValidationResult | None = None) -> Resolution:
        """Validate, then resolve ``environment``: overrides applied, references checked, graph ordered."""
        validation = validation or self.validate()
        if not validation.ok:
            return Resolution(validation, None, validation.diagnostics)
        graph, problems = resolve_environment(list(validation.specs), environment)
        if graph is not None:  # local paths stay inside the project (after the environment's overrides)
            confined = confinement_problems(graph, self.root)
            if confined:  # an error of resolution, like a dangling reference: no graph to go on with
                graph, problems = None, [*problems, *confined]
        diagnostics = tuple(sorted([*validation.diagnostics, *problems], key=Diagnostic.sort_key))
        return Resolution(validation, graph, diagnostics)

    def check(
        self,
        environments: Sequence[str] | None = None,
        *,
        today: dt.date | None = None,
        validation: ValidationResult | None = None,
    ) -> CheckResult:
        """Validate, resolve and evaluate every policy for ``environments`` (default: all of them)."""
        validation = validation or self.validate()
        if not validation.ok:
            return CheckResult((), validation.diagnostics, (), len(validation.specs))
        names = tuple(environments) if environments else tuple(self.environments(validation))
        return self.check_sessions(validation, [self.session(name, validation, today=today) for name in names])

    def check_sessions(self, validation: ValidationResult, sessions: Sequence[EnvironmentSession]) -> CheckResult:
        """The check result of environment sessions made from ``validation`` (each evaluates its policies once)."""
        if not validation.ok:
            return CheckResult((), validation.diagnostics, (), len(validation.specs))
        diagnostics: list[Diagnostic] = list(validation.diagnostics)
        findings: list[Finding] = []
        for session in sessions:
            if session.graph is None:
                diagnostics.extend(d for d in session.resolution.diagnostics if d not in diagnostics)
                continue
            findings.extend(session.findings)
        names = tuple(s.environment for s in sessions)
        return CheckResult(names, tuple(diagnostics), tuple(findings), len(validation.specs))

    def governed_by(self, revision: str) -> Project:
        """This project checked by ``revision``'s policy settings, policy files and access rules (the base of a
        change under review); changing them is a ``governance.gate-changed`` finding."""
        import dataclasses

        from mlspec.app.governance import baseline

        return dataclasses.replace(self, baseline=baseline(self, revision), _caches={})

    def policy_set(self) -> PolicySet:
        """The policies in force: the built-in library and the project's policies folder (loaded once); the
        base's under a baseline."""
        from mlspec.policy.evaluate import PolicySet

        if self.baseline is not None:
            return self.baseline.policy_set
        policies = self._caches.get("policies")
        if not isinstance(policies, PolicySet):
            policies = PolicySet.for_project(self.root / self.settings.policies)
            self._caches["policies"] = policies
        return policies

    def evaluate_policies(self, graph: ResolvedGraph, *, today: dt.date | None = None) -> tuple[Finding, ...]:
        """Every policy finding for one resolved environment, waivers applied (``today`` judges expiry)."""
        from mlspec.app.governance import waiver_approvals
        from mlspec.policy.evaluate import check_graph, engine_factory

        config = self.settings.policy if self.baseline is None else self.baseline.policy
        factory = engine_factory(config.engine, config.opa_url, config.timeout_seconds)
        found = check_graph(
            graph, self.name, self.policy_set(), today=today, timeout=config.timeout_seconds,
            engine_factory=factory, cache=self._cache("policy"), approvals=waiver_approvals(self, graph),
        )  # fmt: skip
        gate = self.baseline.findings(graph.name) if self.baseline is not None else []
        return (*found, *gate)

    def _render_cache(self) -> RenderCache:
        # one cache per Project, so environments rendered together share its memory layer
        return self._cache("render")

    def _cache(self, name: str) -> RenderCache:
        """The project's content-hash cache called ``name`` (rendered bytes, policy results), made once."""
        from mlspec.render.cache import RenderCache

        cache = self._caches.get(name)
        if not isinstance(cache, RenderCache):
            cache = RenderCache(self.cache_dir / name)
            self._caches[name] = cache
        return cache

    @property
    def cache_dir(self) -> Path:
        """Where content-hash caches live (never committed)."""
        return self.home / ".mlspec" / "cache"

    def render(
        self,
        environment: str,
        targets: Sequence[str] | None = None,
        resolution: Resolution | None = None,
        *,
        use_cache: bool = True,
    ) -> tuple[Resolution, RenderResult | None]:
        """Resolve ``environment`` and render its artifacts (all targets, or the named ones)."""
        from mlspec.render.base import RenderContext
        from mlspec.render.engine import render_environment

        resolution = resolution or self.resolve(environment)
        if resolution.graph is None or not resolution.ok:
            return resolution, None
        context = RenderContext(
            project=self.name,
            project_root=self.root,
            mlspec_version=__version__,
            environments=tuple(specs_of(resolution.validation.specs, Environment)),
            cache=self._render_cache() if use_cache else None,
        )
        return resolution, render_environment(resolution.graph, context, targets)

    # --- environments and sessions ---------------------------------------------------------------

    def environment_or_default(self, environment: str | None) -> str | None:
        """``environment``, else the project file's ``default_environment`` when the file sets one, else None."""
        if environment:
            return environment
        if "default_environment" in self.settings.model_fields_set:
            return self.settings.default_environment
        return None

    def session(
        self, environment: str, validation: ValidationResult | None = None, *, today: dt.date | None = None
    ) -> EnvironmentSession:
        """An environment session: validation, graph, findings, revision and state store, each made once."""
        from mlspec.app.session import EnvironmentSession

        return EnvironmentSession(self, environment, validation, today=today)

    def state_store(self) -> StateStore:
        """The project's state store (the caller closes it)."""
        from mlspec.app.paths import state_store

        return state_store(self)

    # --- use cases -------------------------------------------------------------------------------

    def plan(self, environment: str, options: PlanOptions | None = None) -> PlanResult:
        """Plan ``environment``: the changes against its state and the policy findings beside them."""
        from mlspec.app.planning import plan_environment

        return plan_environment(self, environment, options)

    def apply(
        self,
        environment: str,
        options: ApplyOptions | None = None,
        *,
        approve: Approve = lambda _: True,
        progress: Progress = lambda _: None,
    ) -> tuple[PlanResult, ApplyResult | None]:
        """Lock, plan (or verify ``options.saved``), refuse what policy or safety forbids, and apply."""
        from mlspec.app.applying import apply_environment

        with private_files():
            return apply_environment(self, environment, options, approve=approve, progress=progress)

    def destroy(
        self,
        environment: str,
        options: DestroyOptions | None = None,
        *,
        approve: Approve = lambda _: True,
        progress: Progress = lambda _: None,
    ) -> tuple[Plan | None, ApplyResult | None]:
        """Delete everything applied in ``environment``."""
        from mlspec.app.applying import destroy_environment

        with private_files():
            return destroy_environment(self, environment, options, approve=approve, progress=progress)

    def rollback(
        self,
        environment: str,
        revision: str,
        options: ApplyOptions | None = None,
        *,
        approve: Approve = lambda _: True,
        progress: Progress = lambda _: None,
    ) -> tuple[PlanResult, ApplyResult | None]:
        """Apply the specs as they were at git ``revision`` (state and audit are shared)."""
        import dataclasses

        from mlspec.app.applying import apply_environment
        from mlspec.app.options import ApplyOptions
        from mlspec.app.rollback import project_at, resolve_revision

        options = options or ApplyOptions()
        recorded = f"{resolve_revision(self.root, revision)} rollback to {revision}"
        options = dataclasses.replace(options, plan=dataclasses.replace(options.plan, revision=recorded))
        with project_at(self, revision) as old, private_files():
            return apply_environment(old, environment, options, approve=approve, progress=progress)

    def drift(self, environment: str) -> Drift:
        """Per resource, the artifacts whose live content differs from what was applied."""
        from mlspec.app.planning import drift

        with self.session(environment) as session:
            return drift(session)

    def status(self, environment: str) -> PlatformStatus:
        """Endpoints, versions, traffic and health of a local environment."""
        from mlspec.app.operations import status

        return status(self, environment)

    def caller_headers(
        self, environment: str, deployment: str, *, subject: str = "mlspec", ttl_seconds: int = 900
    ) -> dict[str, str]:
        """The headers that authenticate a call to a local online Deployment (an API key or a local token)."""
        from mlspec.app.credentials import caller_headers

        with private_files():
            return caller_headers(self, environment, deployment, subject=subject, ttl_seconds=ttl_seconds)

    def monitor(self, environment: str, *, progress: Progress = lambda _: None) -> list[MonitorOutcome]:
        """Check drift per Deployment and act on it; run batch scoring that is due."""
        from mlspec.app.operations import monitor

        with private_files():
            return monitor(self, environment, progress=progress)

    def score(self, environment: str, deployment: str, *, progress: Progress = lambda _: None) -> dict[str, Any]:
        """Run a batch Deployment's scoring now."""
        from mlspec.app.operations import score_now

        with private_files():
            return score_now(self, environment, deployment, progress=progress)

    def build_edge(
        self, environment: str, deployment: str, *, progress: Callable[[str], None] = lambda _: None
    ) -> dict[str, str]:
        """Build (or reuse) an edge Deployment's signed package in a local environment now."""
        from mlspec.app.edge import build_edge_package

        with private_files():
            return build_edge_package(self, environment, deployment, progress=progress)

    def build_images(
        self, *, push: str | None = None, base_image: str | None = None, torch_variant: str = "cpu"
    ) -> list[BuiltImage]:
        """Build (or reuse, by content tag) the runtime and serving images and record them (images.lock.json)."""
        from mlspec.app.images import build_project_images

        return build_project_images(self, push=push, base_image=base_image, torch_variant=torch_variant)

    def rehearse(
        self,
        environment: str,
        stand_ins: RehearsalOptions,
        *,
        pipelines: tuple[str, ...] = (),
        sample_env: str = "local",
        progress: Progress = lambda _: None,
    ) -> RehearsalReport:
        """Run what Argo CD would run for ``environment`` (Feast jobs, pipelines) in local containers against
        stand-in stores, with ``sample_env``'s data."""
        from mlspec.app.rehearsal import rehearse, standins_for

        standins = standins_for(self, environment, stand_ins)
        return rehearse(self, environment, standins, pipelines=pipelines, sample_env=sample_env, progress=progress)

    def compliance(
        self, environment: str, *, today: dt.date | None = None, show_date: bool = False
    ) -> ComplianceReport:
        """The compliance report of ``environment``'s sensitive data."""
        from mlspec.report.compliance import build_compliance

        return build_compliance(self, environment, today=today, show_date=show_date)

    # --- the rest of what the CLI does ------------------------------------------------------------

    def render_to(
        self,
        environment: str,
        folder: Path,
        validation: Validation,
        *,
        targets: Sequence[str] = (),
        use_cache: bool = True,
        pin: bool = False,
    ) -> tuple[Resolution, RenderResult | None, WriteSummary | None]:
        """Render ``environment`` and write its files under ``folder`` (unknown target names: UsageError); ``pin``
        resolves every served model version in the registry first (the GitOps hand-off)."""
        from mlspec.app.rendering import check_targets, render_to

        check_targets(targets)
        return render_to(self, environment, folder, validation, targets=targets, use_cache=use_cache, pin=pin)

    def test_policies(self) -> list[PolicyTestResult]:
        """Run every test_ rule of the library's and the project's *_test.rego files."""
        from mlspec.policy.evaluate import policy_files
        from mlspec.policy.testing import run_policy_tests

        return run_policy_tests(policy_files(self.root / self.settings.policies))

    def read_plan(self, path: Path) -> Plan:
        """A plan saved by ``mlspec plan --out`` (UsageError when the file is not one this version reads)."""
        from mlspec.app.planning import read_saved_plan

        return read_saved_plan(path)

    def verify_audit(self) -> Verification:
        """Check the audit log against its chain and its signed checkpoints (edited, removed, reordered, cut or
        rewritten records; forged checkpoints; emptied or rolled-back state)."""
        from mlspec.app.audit_trail import verify_audit

        return verify_audit(self)

    def login(self, environment: str, *, show: Progress = lambda _: None) -> Identity:
        """Log a person in to the environment's identity provider (device code); who they now are."""
        from mlspec.app.login import login

        return login(self, environment, show=show)

    def durability_warnings(self) -> list[str]:
        """Where this project's state or audit trail could be lost (a CI runner's disk, unpushed checkpoints)."""
        from mlspec.app.audit_trail import durability_warnings

        return durability_warnings(self)

    def export_audit(self, environment: str, out: Path) -> Verification:
        """Write the audit log, its checkpoints, their public keys and a standalone checker into ``out``."""
        from mlspec.app.audit_export import export_audit

        return export_audit(self, environment, out)
