"""The one error root. Imports nothing heavy; never builds classes from input."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlspec.diagnostics import Diagnostic

if TYPE_CHECKING:
    from mlspec.policy.findings import Finding


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


class PlanRefused(MlspecError):
    """The plan may not be applied: stale, destructive without permission, unclean, or failing policy.

    ``reason`` says which (a short code a caller can branch on); ``findings`` holds the
    policy findings that block it when ``reason`` is ``"policy"``.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "refused",
        findings: tuple[Finding, ...] = (),
        hint: str = "",
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.findings = findings


class AccessDenied(PlanRefused):
    """The actor may not do this here, or the change lacks the approval the environment requires.

    ``reason`` is ``"not-allowed"`` or ``"no-approval"``; ``actor``, ``operation`` and
    ``environment`` say who was refused what, and ``allowed`` who may.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        actor: str,
        operation: str,
        environment: str,
        allowed: tuple[str, ...] = (),
        hint: str = "",
    ) -> None:
        super().__init__(message, reason=reason, hint=hint)
        self.actor = actor
        self.operation = operation
        self.environment = environment
        self.allowed = allowed
