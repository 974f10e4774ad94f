"""The state interface both backends implement, and the rules they share.

A store holds the applied state of each environment, a hash-chained audit log and one lock per
environment. Stores are context managers (``with open_store(...) as store:`` closes it), and
``with store.locked(env, holder, operation):`` takes an environment's lock and always gives it back.

Shared by the SQLite and PostgreSQL backends: the audit chain's rule (how a record is chained and
hashed, and how a chain is verified), the error for a lock another process holds, and when a lock's
holder on this host is gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, Self

from mlspec.errors import MlspecError
from mlspec.hashing import canonical, digest
from mlspec.state.model import AuditRecord, EnvironmentState, LockInfo, ResourceState

GENESIS = "0" * 64
AuditEntry = tuple[str, str, str, dict[str, Any]]  # actor, revision, plan hash, record


class LockedError(MlspecError):
    """Another process holds the environment's lock."""

    @classmethod
    def held_by(cls, environment: str, lock: LockInfo) -> LockedError:
        """The error for ``environment``, naming who holds ``lock`` and how to get past it."""
        return cls(
            f"environment '{environment}' is locked by {lock.holder} on {lock.host} "
            f"(pid {lock.pid}, {lock.operation} since {lock.acquired_at}, lease until {lock.expires_at})",
            hint="wait for it to finish (--lock-timeout), or if that process is gone: "
            f"mlspec state unlock --env {environment}",
        )


class StateReader(Protocol):
    """Read-only access: what plan gets."""

    def read(self, environment: str) -> EnvironmentState:
        """The environment's applied state."""
        ...

    def locks(self) -> list[LockInfo]:
        """Every lock held."""
        ...

    def audit(self, environment: str | None = None) -> list[AuditRecord]:
        """Audit records, oldest first."""
        ...


class StateStore(ABC):
    """Applied state, audit log and environment locks: what plan, apply and the state commands use."""

    @abstractmethod
    def read(self, environment: str) -> EnvironmentState:
        """The environment's applied state."""

    @abstractmethod
    def environments(self) -> list[str]:
        """Environments that have state."""

    @abstractmethod
    def locks(self) -> list[LockInfo]:
        """Every lock held."""

    @abstractmethod
    def audit(self, environment: str | None = None) -> list[AuditRecord]:
        """Audit records, oldest first."""

    @abstractmethod
    def audit_head(self) -> tuple[int, str]:
        """The newest audit record's sequence number and hash (``(0, GENESIS)`` for an empty log)."""

    @abstractmethod
    def put(self, environment: str, resource: ResourceState, audit: AuditEntry | None = None) -> None:
        """Record one applied resource and its audit record in one transaction."""

    @abstractmethod
    def delete(self, environment: str, ref: str, audit: AuditEntry | None = None) -> None:
        """Forget one deleted resource and record it in the audit log in one transaction."""

    @abstractmethod
    def append_audit(
        self, environment: str, actor: str, revision: str, plan_hash: str, record: dict[str, Any]
    ) -> AuditRecord:
        """Append one record, chained to the last one."""

    @abstractmethod
    def acquire(
        self, environment: str, holder: str, operation: str, *, wait: float = 0.0, lease: float = 3600.0
    ) -> None:
        """Take the environment's lock (waiting up to ``wait`` seconds) or raise LockedError naming the holder."""

    @abstractmethod
    def release(self, environment: str) -> None:
        """Give back a lock this process holds."""

    @abstractmethod
    def break_lock(self, environment: str) -> LockInfo | None:
        """Remove the environment's lock whoever holds it; returns what was removed."""

    @abstractmethod
    def close(self) -> None:
        """Close the store."""

    @contextlib.contextmanager
    def locked(
        self, environment: str, holder: str, operation: str, *, wait: float = 0.0, lease: float = 3600.0
    ) -> Iterator[None]:
        """Hold the environment's lock for the ``with`` block; it is released however the block ends."""
        self.acquire(environment, holder, operation, wait=wait, lease=lease)
        try:
            yield
        finally:
            self.release(environment)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def now() -> str:
    """UTC time as ISO-8601 with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def holder_is_gone(lock: LockInfo, host: str) -> bool:
    """True when the lock's holder ran on ``host`` (this machine) and its process no longer exists."""
    if lock.host != host:
        return False
    try:
        os.kill(lock.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


# The audit chain: each record's hash covers its fields and the hash of the record before it.
def record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The hash that chains an audit record to its predecessor."""
    return digest(prev_hash, canonical(fields))


def chained(last: Any, environment: str, audit: AuditEntry) -> AuditRecord:
    """The next audit record after ``last`` (its ``(seq, hash)`` row, or None for the first): the chain's one rule."""
    actor, revision, plan_hash, record = audit
    seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
    fields = {
        "seq": seq, "environment": environment, "at": now(), "actor": actor,
        "revision": revision, "plan_hash": plan_hash, "record": record,
    }  # fmt: skip
    return AuditRecord(**fields, prev_hash=prev, hash=record_hash(prev, fields))  # type: ignore[arg-type]


def audit_row(entry: AuditRecord) -> tuple[Any, ...]:
    """The audit table's columns for one record, in order (both backends store it alike)."""
    return (
        entry.seq, entry.environment, entry.at, entry.actor, entry.revision, entry.plan_hash,
        canonical(entry.record), entry.prev_hash, entry.hash,
    )  # fmt: skip


def audit_from_row(row: tuple[Any, ...]) -> AuditRecord:
    """An audit record from its table row (the inverse of ``audit_row``)."""
    return AuditRecord(row[0], row[1], row[2], row[3], row[4], row[5], parse_record(row[6]), row[7], row[8])


def parse_record(text: str) -> dict[str, Any]:
    """An audit record's body; one that no longer parses was tampered with and fails verification."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparseable": text}
    return value if isinstance(value, dict) else {"unparseable": text}


def verify_chain(records: list[AuditRecord]) -> list[str]:
    """Problems in the audit chain: edited, removed or reordered records. Empty when intact."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    for entry in records:
        if entry.seq != expected_seq:
            problems.append(f"record {entry.seq}: expected record {expected_seq} here (records removed or reordered)")
        if entry.prev_hash != prev:
            problems.append(f"record {entry.seq}: does not follow the record before it (removed or reordered)")
        fields = {
            "seq": entry.seq, "environment": entry.environment, "at": entry.at, "actor": entry.actor,
            "revision": entry.revision, "plan_hash": entry.plan_hash, "record": entry.record,
        }  # fmt: skip
        if record_hash(entry.prev_hash, fields) != entry.hash:
            problems.append(f"record {entry.seq}: its content does not match its hash (edited)")
        prev = entry.hash
        expected_seq = entry.seq + 1
    return problems
