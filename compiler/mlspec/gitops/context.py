"""What the steps of one reconcile cycle share: the commit source, the journal, the status, who applies."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from mlspec.gitops.events import Event
from mlspec.gitops.journal import Journal
from mlspec.gitops.source import CommitSource
from mlspec.gitops.status import Status, StatusFile


class CycleContext:
    """The parts a cycle's steps work with, and the status they update (read once per cycle).

    ``actor`` applies; ``allow_destroy`` lets applies delete production Deployments;
    ``progress`` receives the per-resource lines of applies.
    """

    def __init__(
        self,
        source: CommitSource,
        journal: Journal,
        status_file: StatusFile,
        *,
        allow_destroy: bool,
        progress: Callable[[str], None],
    ) -> None:
        self.source = source
        self.journal = journal
        self.status_file = status_file
        self.environment = source.environment
        self.actor = journal.actor
        self.allow_destroy = allow_destroy
        self.progress = progress
        self._status: Status | None = None

    @property
    def status(self) -> Status:
        """The current status (read from ``status.json`` on first use after ``reload``)."""
        if self._status is None:
            self._status = self.status_file.read()
        return self._status

    def reload(self) -> Status:
        """Forget the status in memory and read it again (another reconciler may have used the folder)."""
        self._status = None
        return self.status

    def save(self) -> None:
        """Write the status to ``status.json``."""
        self.status_file.write(self.status)

    def record(self, event: str, commit: str, message: str, extra: dict[str, Any]) -> None:
        """Append a reconcile entry to the audit log of the project as checked out now."""
        self.journal.record(self.source.project(), event, commit, message, extra)

    def fail(self, commit: str, message: str, events: list[Event]) -> None:
        """Count a failure (retried with backoff), record it where possible, and report it."""
        status = self.status
        status.failures += 1
        status.last_error = message
        with contextlib.suppress(Exception):
            self.record("failed", commit, message, {"attempt": status.failures})
        events.append(Event("failed", message, commit))
