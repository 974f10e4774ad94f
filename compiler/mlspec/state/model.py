"""State as plain data: what is applied in one environment, per resource."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATE_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ResourceState:
    """One applied resource: its resolved spec, hashes, artifacts, target-side ids, and provenance."""

    ref: str
    fingerprint: str
    spec: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)  # path -> sha256
    target_ids: dict[str, str] = field(default_factory=dict)
    revision: str = ""
    applied_at: str = ""
    applied_by: str = ""

    @property
    def kind(self) -> str:
        """The resource's kind."""
        return self.ref.split("/", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResourceState:
        """Inverse of to_dict."""
        return cls(**data)


@dataclass(frozen=True)
class EnvironmentState:
    """Everything applied in one environment; ``serial`` grows with every write."""

    environment: str
    serial: int
    resources: dict[str, ResourceState]


@dataclass(frozen=True)
class LockInfo:
    """Who holds an environment's lock, from where, since when, until when."""

    environment: str
    holder: str
    host: str
    pid: int
    operation: str
    acquired_at: str
    expires_at: str


@dataclass(frozen=True)
class AuditRecord:
    """One appended audit entry; ``hash`` chains it to the one before."""

    seq: int
    environment: str
    at: str
    actor: str
    revision: str
    plan_hash: str
    record: dict[str, Any]
    prev_hash: str
    hash: str
