"""The reconciler's memory between cycles, and ``<workdir>/status.json`` that mirrors it for people and probes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUS = "status.json"


@dataclass
class Status:
    """The reconciler's memory between cycles; persisted to ``status.json`` and rebuilt from the audit log."""

    environment: str
    repo: str
    branch: str
    applied: str | None = None
    applied_at: str | None = None
    branch_commit: str | None = None
    refused: str | None = None
    refused_reason: str = ""
    failures: int = 0
    last_error: str = ""
    drift: list[str] = field(default_factory=list)
    last_monitoring: float | None = None  # epoch seconds
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


class StatusFile:
    """``status.json`` of one work folder, for one environment, repository and branch."""

    def __init__(self, workdir: Path, environment: str, repo: str, branch: str) -> None:
        self.path = workdir / STATUS
        self.identity = (environment, repo, branch)

    def read(self) -> Status:
        """The saved status, or a fresh one when there is none or it belongs to another environment or branch."""
        fresh = Status(*self.identity)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(Status)}
            loaded = Status(**{k: v for k, v in data.items() if k in known})
            if (loaded.environment, loaded.repo, loaded.branch) == self.identity:
                return loaded
        except (OSError, ValueError, TypeError):
            pass
        return fresh

    def write(self, status: Status) -> None:
        """Replace the file atomically."""
        from mlspec.atomic import atomic_write

        text = json.dumps(status.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write(self.path, text.encode())
