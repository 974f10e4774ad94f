"""Finding: one policy result about one resource in one environment. Plain data; views render it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from mlspec.diagnostics import Location

Severity = Literal["deny", "warn"]
Status = Literal["failed", "waived"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A policy's verdict on one resource: what is wrong, where, and how to fix it."""

    policy: str
    severity: Severity
    message: str
    resource: str
    environment: str
    location: Location
    path: str = ""
    hint: str = ""
    status: Status = "failed"
    waiver: str = ""

    @property
    def blocking(self) -> bool:
        """A failed deny blocks apply and fails `mlspec check`."""
        return self.severity == "deny" and self.status == "failed"

    def waived_by(self, waiver: str) -> Finding:
        """The same finding, waived by ``waiver`` (still reported)."""
        return replace(self, status="waived", waiver=waiver)

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready data (what a saved plan records)."""
        return {
            "policy": self.policy,
            "severity": self.severity,
            "status": self.status,
            "message": self.message,
            "resource": self.resource,
            "environment": self.environment,
            "location": {"file": self.location.file, "line": self.location.line, "column": self.location.column},
            "path": self.path,
            "hint": self.hint,
            "waiver": self.waiver,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """Read a finding written by ``to_dict``."""
        where = data["location"]
        return cls(
            data["policy"], data["severity"], data["message"], data["resource"], data["environment"],
            Location(where["file"], int(where["line"]), int(where["column"])),
            data.get("path", ""), data.get("hint", ""), data.get("status", "failed"), data.get("waiver", ""),
        )  # fmt: skip

    def sort_key(self) -> tuple[str, str, int, int, str]:
        """Stable order: environment, file, position, policy."""
        return (self.environment, self.location.file, self.location.line, self.location.column, self.policy)
