"""The SQLite state backend: transactional, locked per environment, with a hash-chained audit log.

Every resource write is its own transaction, committed before the next resource
is applied, so a crash at any point leaves state that says exactly what was
applied. The database runs in WAL mode.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlspec.errors import MlspecError
from mlspec.state.base import (
    GENESIS,
    AuditEntry,
    LockedError,
    StateStore,
    audit_from_row,
    audit_row,
    chained,
    holder_is_gone,
    now,
)
from mlspec.state.model import AuditRecord, EnvironmentState, LockInfo, ResourceState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS serials (environment TEXT PRIMARY KEY, serial INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    environment TEXT NOT NULL, ref TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (environment, ref)
);
CREATE TABLE IF NOT EXISTS locks (
    environment TEXT PRIMARY KEY, holder TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    operation TEXT NOT NULL, acquired_at TEXT NOT NULL, expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, environment TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,
    revision TEXT NOT NULL, plan_hash TEXT NOT NULL, record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
"""


@functools.cache
def _expected_columns() -> dict[str, list[str]]:
    """Every table of SCHEMA with its columns (read from SCHEMA itself, in memory): a file whose tables lack
    them is not mlspec state."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(SCHEMA)
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")] for table in tables}
    finally:
        db.close()


def _unusable(path: Path, why: str) -> MlspecError:
    """The clean error for a state file mlspec cannot use, and how to recover."""
    return MlspecError(
        f"the state file {path} is not usable: {why}",
        hint="restore it from a backup (a copy of .mlspec/state.db); never edit or replace state by hand. "
        "Without one, move it aside: the next apply records the environment afresh, and `mlspec state list` "
        "shows what a state file holds",
    )


class SqliteState(StateStore):
    """State, locks and audit in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = not path.exists()
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            if new:  # state is its owner's only; SQLite gives the -wal and -shm files the same mode
                path.chmod(0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise _unusable(path, str(exc)) from None
        # WAL + NORMAL: every commit survives a crash of the process (what apply must survive); after a
        # power loss the last commits may roll back, and re-applying (idempotent) converges.
        try:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', '1')")
            missing = self._missing_columns()
        except sqlite3.DatabaseError as exc:  # a damaged file can open and fail at the first statement
            self._db.close()
            raise _unusable(path, str(exc)) from None
        if missing:
            self._db.close()
            raise _unusable(path, "its tables are not mlspec's: " + "; ".join(missing))

    def _missing_columns(self) -> list[str]:
        """What the file's tables lack of the layout mlspec writes (an empty list when it is all there)."""
        missing = []
        for table, wanted in _expected_columns().items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            lacking = [column for column in wanted if column not in have]
            if lacking:
                missing.append(f"table {table} lacks {', '.join(lacking)}")
        return missing

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # reading
    def read(self, environment: str) -> EnvironmentState:
        """The environment's applied state."""
        rows = self._db.execute("SELECT ref, data FROM resources WHERE environment = ? ORDER BY ref", (environment,))
        resources = {}
        for ref, data in rows:
            try:
                resources[ref] = ResourceState.from_dict(json.loads(data))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise _unusable(self.path, f"the record of {environment}/{ref} is damaged ({exc})") from None
        serial = self._db.execute("SELECT serial FROM serials WHERE environment = ?", (environment,)).fetchone()
        return EnvironmentState(environment, serial[0] if serial else 0, resources)

    def environments(self) -> list[str]:
        """Environments that have state."""
        return [row[0] for row in self._db.execute("SELECT environment FROM serials ORDER BY environment")]

    def locks(self) -> list[LockInfo]:
        """Every lock held."""
        rows = self._db.execute("SELECT * FROM locks ORDER BY environment").fetchall()
        return [LockInfo(*row) for row in rows]

    def audit(self, environment: str | None = None) -> list[AuditRecord]:
        """Audit records, oldest first."""
        query = "SELECT * FROM audit" + (" WHERE environment = ?" if environment else "") + " ORDER BY seq"
        rows = self._db.execute(query, (environment,) if environment else ()).fetchall()
        return [audit_from_row(row) for row in rows]

    def audit_head(self) -> tuple[int, str]:
        """The newest audit record's sequence number and hash (``(0, GENESIS)`` for an empty log)."""
        row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    # writing: one transaction per call
    def put(self, environment: str, resource: ResourceState, audit: AuditEntry | None = None) -> None:
        """Record one applied resource (and its audit record, in the same transaction)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO resources VALUES (?, ?, ?)",
                (environment, resource.ref, json.dumps(resource.to_dict(), sort_keys=True)),
            )
            self._bump(db, environment)
            if audit is not None:
                self._append(db, environment, audit)

    def delete(self, environment: str, ref: str, audit: AuditEntry | None = None) -> None:
        """Forget one resource that was deleted (and record it in the audit log, in the same transaction)."""
        with self._transaction() as db:
            db.execute("DELETE FROM resources WHERE environment = ? AND ref = ?", (environment, ref))
            self._bump(db, environment)
            if audit is not None:
                self._append(db, environment, audit)

    @staticmethod
    def _bump(db: sqlite3.Connection, environment: str) -> None:
        db.execute(
            "INSERT INTO serials VALUES (?, 1) ON CONFLICT(environment) DO UPDATE SET serial = serial + 1",
            (environment,),
        )

    def append_audit(
        self, environment: str, actor: str, revision: str, plan_hash: str, record: dict[str, Any]
    ) -> AuditRecord:
        """Append one record, chained to the last one."""
        with self._transaction() as db:
            return self._append(db, environment, (actor, revision, plan_hash, record))

    @staticmethod
    def _append(db: sqlite3.Connection, environment: str, audit: AuditEntry) -> AuditRecord:
        entry = chained(
            db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone(), environment, audit
        )
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", audit_row(entry))
        return entry

    # locking
    def acquire(
        self, environment: str, holder: str, operation: str, *, wait: float = 0.0, lease: float = 3600.0
    ) -> None:
        """Take the environment's lock, waiting up to ``wait`` seconds; stale locks of dead processes are taken over."""
        deadline = time.monotonic() + wait
        host = socket.gethostname()
        while True:
            with self._transaction() as db:
                row = db.execute("SELECT * FROM locks WHERE environment = ?", (environment,)).fetchone()
                current = LockInfo(*row) if row else None
                if current is None or _stale(current):
                    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lease)
                    db.execute(
                        "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            environment,
                            holder,
                            host,
                            os.getpid(),
                            operation,
                            now(),
                            expires.replace(microsecond=0).isoformat(),
                        ),
                    )
                    return
            if time.monotonic() >= deadline:
                raise LockedError.held_by(environment, current)
            time.sleep(0.2)

    def release(self, environment: str) -> None:
        """Give back a lock this process holds."""
        with self._transaction() as db:
            db.execute("DELETE FROM locks WHERE environment = ? AND pid = ?", (environment, os.getpid()))

    def break_lock(self, environment: str) -> LockInfo | None:
        """Remove the environment's lock whoever holds it (``mlspec state unlock``); returns what was removed."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM locks WHERE environment = ?", (environment,)).fetchone()
            db.execute("DELETE FROM locks WHERE environment = ?", (environment,))
        return LockInfo(*row) if row else None


def _stale(lock: LockInfo) -> bool:
    """A lock whose lease ran out, or whose holder process on this host is gone."""
    if dt.datetime.fromisoformat(lock.expires_at) < dt.datetime.now(dt.UTC):
        return True
    return holder_is_gone(lock, socket.gethostname())
