"""The one error root. Imports nothing heavy; never builds classes from input."""

from __future__ import annotations

from mlspec.diagnostics import Diagnostic


class MlspecError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", diagnostics: tuple[Diagnostic, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.diagnostics = diagnostics


class UsageError(MlspecError):
    """The command line itself is wrong (bad path, bad option): exit code 2."""

    exit_code = 2


class ProjectNotFoundError(UsageError):
    """No mlspec.yaml at or above the given path."""
