"""Merge bridge, to delete at merge: gitops/reconcile.py and gitops/promote.py still call these by their old
keyword signatures; the use cases live in ``mlspec.app`` (see the report of issue 15 for the call sites)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlspec.app.options import ApplyOptions, PlanOptions
from mlspec.app.paths import runs_engines, state_store
from mlspec.app.rollback import project_at
from mlspec.errors import PlanRefused

if TYPE_CHECKING:
    from mlspec.app.planning import PlanResult
    from mlspec.app.project import Project
    from mlspec.apply.reconciler import ApplyResult

__all__ = ["PlanRefused", "apply_environment", "plan_environment", "project_at", "runs_engines", "state_store"]


def plan_environment(project: Project, environment: str, *, refresh: bool = False) -> PlanResult:
    """``Project.plan`` with the old keyword."""
    return project.plan(environment, PlanOptions(refresh=refresh))


def apply_environment(
    project: Project,
    environment: str,
    *,
    refresh: bool = False,
    allow_destroy: bool = False,
    who: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[PlanResult, ApplyResult | None]:
    """``Project.apply`` with the old keywords."""
    options = ApplyOptions(plan=PlanOptions(refresh=refresh, who=who), allow_destroy=allow_destroy)
    return project.apply(environment, options, progress=progress)
