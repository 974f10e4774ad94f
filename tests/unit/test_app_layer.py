"""The application layer's facade: every use case the CLI offers is a Project method (the layering itself is
checked by the import contracts in tests/test_architecture.py)."""

from __future__ import annotations

import inspect

from mlspec.app.project import Project


def test_the_facade_reaches_every_use_case() -> None:
    for use_case in ("validate", "check", "render", "plan", "apply", "destroy", "rollback", "status", "monitor",
                     "score", "build_edge", "compliance", "drift", "session"):  # fmt: skip
        method = getattr(Project, use_case)
        assert callable(method), use_case
        assert inspect.getdoc(method), f"Project.{use_case} has no docstring"


def test_the_facade_delegates() -> None:
    """A facade, not a god class: each use case is a few lines that hand over to its module."""
    home = inspect.getfile(Project)
    methods = {
        name: member
        for name, member in vars(Project).items()
        if inspect.isfunction(member) and member.__code__.co_filename == home  # not dataclass-generated ones
    }
    too_long = {name: n for name, m in methods.items() if (n := len(inspect.getsource(m).splitlines())) > 30}
    assert too_long == {}
