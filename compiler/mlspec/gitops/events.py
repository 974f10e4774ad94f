"""What a reconcile cycle reports: its events, its result, and the two ways a commit does not land."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mlspec.errors import MlspecError

EventKind = Literal[
    "applied", "refused", "failed", "drift", "self-healed", "monitoring", "fetch-failed", "monitoring-failed"
]


@dataclass(frozen=True)
class Event:
    """One thing that happened, as the one line printed and written to the audit log."""

    kind: EventKind
    message: str
    commit: str = ""
    resources: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did and where it left the environment."""

    environment: str
    branch_commit: str | None  # the branch tip fetched (None when the fetch failed)
    applied_commit: str | None  # the commit the environment is at after the cycle
    events: tuple[Event, ...]
    refused: str | None  # the branch tip when it is a refused commit
    failed: bool  # a fetch, an apply or a repair failed: retried with backoff
    drifted: tuple[str, ...]  # resources that still differ from the applied commit
    next_delay: float  # seconds until the next cycle should run

    @property
    def in_sync(self) -> bool:
        """The environment is at the branch tip, nothing failed, and nothing is left drifted."""
        return (
            not self.failed
            and self.branch_commit is not None
            and self.applied_commit == self.branch_commit
            and not self.drifted
        )


class Refusal(Exception):
    """A commit that must not be applied (signature, specs, policy): refused once, never retried."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


class Failure(Exception):
    """An apply that ran and did not land: retried with backoff."""


def describe(exc: BaseException) -> str:
    """An exception as one line: an mlspec error's message, anything else with its type."""
    if isinstance(exc, MlspecError):
        return exc.message
    if isinstance(exc, Refusal):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"
