"""One environment carried through check -> plan -> apply, so one command computes each stage once.

An ``EnvironmentSession`` validates the project (or takes a validation already
made), resolves the environment, evaluates its policies, renders it and opens its
state store, each at most once, on first use. Close it (or use it as a context
manager) to close the store.
"""

from __future__ import annotations

import datetime as dt
from types import TracebackType
from typing import TYPE_CHECKING

from mlspec.app.paths import project_revision, state_store
from mlspec.app.validation import CheckResult, Resolution, ValidationResult
from mlspec.resolve.graph import ResolvedGraph

if TYPE_CHECKING:
    from mlspec.app.options import PlanOptions
    from mlspec.app.planning import PlanResult
    from mlspec.app.project import Project
    from mlspec.policy.findings import Finding
    from mlspec.render.engine import RenderResult
    from mlspec.state.base import StateStore


class EnvironmentSession:
    """The validation, resolved graph, policy findings, revision and state store of one environment."""

    def __init__(
        self,
        project: Project,
        environment: str,
        validation: ValidationResult | None = None,
        *,
        today: dt.date | None = None,
    ) -> None:
        self.project = project
        self.environment = environment
        self.validation = validation if validation is not None else project.validate()
        self.resolution: Resolution = project.resolve(environment, self.validation)
        self.today = today
        self._findings: tuple[Finding, ...] | None = None
        self._rendered: RenderResult | None = None
        self._store: StateStore | None = None
        self._revision: str | None = None

    @property
    def graph(self) -> ResolvedGraph | None:
        """The resolved graph, or None when the specs do not validate or resolve."""
        return self.resolution.graph

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every policy finding for the environment, waivers applied (evaluated once; empty when unresolved)."""
        if self._findings is None:
            graph = self.resolution.graph
            ok = graph is not None and self.resolution.ok
            self._findings = self.project.evaluate_policies(graph, today=self.today) if ok and graph else ()
        return self._findings

    @property
    def blocking(self) -> tuple[Finding, ...]:
        """The findings that make apply refuse."""
        return tuple(f for f in self.findings if f.blocking)

    def check(self) -> CheckResult:
        """This environment's check result (the same findings the plan carries)."""
        if not self.validation.ok:
            return CheckResult((), self.validation.diagnostics, (), len(self.validation.specs))
        return CheckResult((self.environment,), self.resolution.diagnostics, self.findings, len(self.validation.specs))

    def render(self) -> RenderResult | None:
        """The environment's artifacts, rendered once (None when it does not resolve)."""
        if self._rendered is None and self.resolution.ok:
            _, self._rendered = self.project.render(self.environment, resolution=self.resolution)
        return self._rendered

    @property
    def store(self) -> StateStore:
        """The project's state store, opened once for the session."""
        if self._store is None:
            self._store = state_store(self.project)
        return self._store

    @property
    def revision(self) -> str:
        """The git revision the specs come from (asked once)."""
        if self._revision is None:
            assert self.graph is not None, "revision needs a resolved graph"
            self._revision = str(project_revision(self.project, self.graph))
        return self._revision

    def plan(self, options: PlanOptions | None = None) -> PlanResult:
        """Plan the environment from this session (see ``mlspec.app.planning.plan_session``)."""
        from mlspec.app.options import PlanOptions
        from mlspec.app.planning import plan_session

        return plan_session(self, options or PlanOptions(today=self.today))

    def close(self) -> None:
        """Close the state store when the session opened it."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> EnvironmentSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
