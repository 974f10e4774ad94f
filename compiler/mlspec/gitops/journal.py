"""The reconciler's durable record: ``{"type": "reconcile", ...}`` entries in the environment's audit log.

The last ``applied`` entry is the last commit applied; the last ``refused`` one after it
is the commit that is not retried. ``status.json`` only mirrors what this log says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlspec.app.project import Project


@dataclass(frozen=True)
class History:
    """What the audit log says the reconciler of one branch applied and refused last."""

    applied: str | None
    refused: str | None
    refused_reason: str


class Journal:
    """Reconcile entries for ``environment`` from ``branch`` of ``repo``, written as ``actor``."""

    def __init__(self, environment: str, repo: str, branch: str, actor: str) -> None:
        self.environment = environment
        self.repo = repo
        self.branch = branch
        self.actor = actor

    def record(self, project: Project, event: str, commit: str, message: str, extra: dict[str, Any]) -> None:
        """Append one reconcile entry to the project's audit log."""
        with project.state_store() as store:
            store.append_audit(self.environment, self.actor, commit, "", {
                "type": "reconcile", "event": event, "commit": commit, "message": message,
                "repo": self.repo, "branch": self.branch, **extra,
            })  # fmt: skip

    def history(self, project: Project) -> History:
        """The last applied commit, and the commit refused after it (with why), from the audit log."""
        with project.state_store() as store:
            records = [
                r.record for r in store.audit(self.environment)
                if r.record.get("type") == "reconcile" and r.record.get("branch") == self.branch
            ]  # fmt: skip
        applied = next((r for r in reversed(records) if r.get("event") == "applied"), None)
        later = records[records.index(applied) + 1 :] if applied else records
        refused = next((r for r in reversed(later) if r.get("event") == "refused"), None)
        return History(
            str(applied["commit"]) if applied else None,
            str(refused["commit"]) if refused else None,
            str(refused.get("reason", "")) if refused else "",
        )
