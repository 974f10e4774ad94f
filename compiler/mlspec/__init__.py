"""mlspec: declarative GitOps config-as-code for enterprise ML platforms.

The Python API mirrors the CLI::

    from mlspec import Project

    project = Project.open("path/to/platform-repo")
    result = project.validate()
    for diagnostic in result.diagnostics:
        print(diagnostic.location, diagnostic.message)

Heavy parts are imported lazily, so ``import mlspec`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.app.validation import ValidationResult
    from mlspec.diagnostics import Diagnostic, Location, Severity

__all__ = ["Diagnostic", "Location", "Project", "Severity", "ValidationResult", "__version__"]

_LAZY = {
    "Project": "mlspec.app.project",
    "ValidationResult": "mlspec.app.validation",
    "Diagnostic": "mlspec.diagnostics",
    "Location": "mlspec.diagnostics",
    "Severity": "mlspec.diagnostics",
}


def __getattr__(name: str) -> Any:
    """Import public names on first use to keep ``import mlspec`` fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlspec' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
