"""The application layer: the use cases, with one home.

``Project`` (``mlspec.app.project``) is the whole Python API; it delegates to
the modules here:

- ``validation``: validate files; the result types (ValidationResult, Resolution, CheckResult)
- ``session``: EnvironmentSession, one environment carried through check -> plan -> apply
- ``options``: PlanOptions, ApplyOptions, DestroyOptions
- ``planning``: plan an environment (changes and policy findings), engine steps, drift
- ``applying``: apply and destroy (lock, refuse, reconcile through a target)
- ``rollback``: the project as it was at a git revision
- ``paths``: the state store, data and output folders, the revision
- ``targets``: which target adapter an environment applies through
- ``operations``: day-2 operations on a local environment (status, monitor, score)
- ``edge``: build an edge Deployment's package now
- ``rendering``: render environments into a folder

Names are imported lazily so that ``import mlspec.app`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlspec.app.options import ApplyOptions, DestroyOptions, PlanOptions
    from mlspec.app.planning import PlanResult
    from mlspec.app.project import Project
    from mlspec.app.session import EnvironmentSession
    from mlspec.app.validation import CheckResult, Resolution, ValidationResult

__all__ = [
    "ApplyOptions",
    "CheckResult",
    "DestroyOptions",
    "EnvironmentSession",
    "PlanOptions",
    "PlanResult",
    "Project",
    "Resolution",
    "ValidationResult",
]

_LAZY = {
    "ApplyOptions": "mlspec.app.options",
    "DestroyOptions": "mlspec.app.options",
    "PlanOptions": "mlspec.app.options",
    "PlanResult": "mlspec.app.planning",
    "Project": "mlspec.app.project",
    "EnvironmentSession": "mlspec.app.session",
    "CheckResult": "mlspec.app.validation",
    "Resolution": "mlspec.app.validation",
    "ValidationResult": "mlspec.app.validation",
}


def __getattr__(name: str) -> Any:
    """Import public names on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlspec.app' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
