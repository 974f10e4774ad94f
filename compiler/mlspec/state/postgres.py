"""The PostgreSQL state backend: the SQLite backend's guarantees, in a database every machine can reach.

Each project keeps its tables in its own schema (``mlspec_<project>`` unless the
project file names one), so projects can share a database without seeing, or
wiping, each other's state. The tables are the SQLite backend's and the audit chain
follows the rule in ``state/base.py``, so ``verify_chain`` checks both.

Every resource write and its audit record are one transaction. Audit appends take
an exclusive lock on the audit table, so the chain stays linear across machines.

Environment locks are rows (holder, host, pid, operation, lease) taken in a
transaction that holds a transaction-scoped advisory lock for that environment, so
two machines never both see it free. The holder also keeps a session advisory lock
while it holds the row: when its connection is gone (the process died, on whatever
machine) the server drops that lock and the next apply takes the row over. A lease
that ran out (by the server's clock) or a dead holder process on this host are
taken over too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
)
from mlspec.state.model import AuditRecord, EnvironmentState, LockInfo, ResourceState

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 2
# version -> the statements that bring a schema one version before it up to it (1: create everything)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE serials (environment TEXT PRIMARY KEY, serial BIGINT NOT NULL)",
        "CREATE TABLE resources (environment TEXT NOT NULL, ref TEXT NOT NULL, data TEXT NOT NULL, "
        "PRIMARY KEY (environment, ref))",
        "CREATE TABLE locks (environment TEXT PRIMARY KEY, holder TEXT NOT NULL, host TEXT NOT NULL, "
        "pid INTEGER NOT NULL, operation TEXT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL, "
        "expires_at TIMESTAMPTZ NOT NULL)",
        "CREATE TABLE audit (seq BIGINT PRIMARY KEY, environment TEXT NOT NULL, at TEXT NOT NULL, "
        "actor TEXT NOT NULL, revision TEXT NOT NULL, plan_hash TEXT NOT NULL, record TEXT NOT NULL, "
        "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        "CREATE INDEX audit_environment ON audit (environment, seq)",
    ),
    # the audit table is append-only for mlspec's role: no UPDATE, DELETE or TRUNCATE granted, and a trigger
    # refuses them for anyone whose triggers run (an owner or superuser can still drop it: the signed
    # checkpoints outside the database catch what they do then)
    2: (
        "REVOKE UPDATE, DELETE, TRUNCATE ON audit FROM PUBLIC, CURRENT_USER",
        "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'the mlspec audit log is append-only: % refused', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$",
        "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
        "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
        "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
    ),
}
BUMP = "INSERT INTO serials VALUES (%s, 1) ON CONFLICT (environment) DO UPDATE SET serial = serials.serial + 1"
LOCK_COLUMNS = "environment, holder, host, pid, operation, acquired_at, expires_at"


def default_schema(project: str) -> str:
    """The schema a project's state lives in when the project file names none: ``mlspec_<project>``."""
    return ("mlspec_" + re.sub(r"[^a-z0-9_]+", "_", project.lower()))[:63]


def describe(url: str) -> str:
    """Where a database URL points (host, port, database), without its user or password: safe to print."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "(an unparseable URL)"
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


class PostgresState(StateStore):
    """State, locks and audit of one project in one schema of a PostgreSQL database."""

    def __init__(self, url: str, *, schema: str, project: str) -> None:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self.schema = schema
        self.project = project
        self.where = describe(url)
        try:
            self._secret = str(conninfo_to_dict(url).get("password") or "")
        except psycopg.ProgrammingError:
            raise MlspecError("the state database URL is not a valid PostgreSQL URL") from None
        self._host = socket.gethostname()
        self._held: set[str] = set()  # environments whose session advisory lock this connection holds
        try:
            self._db: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                url, autocommit=True, connect_timeout=15, application_name="mlspec"
            )
        except psycopg.Error as exc:
            raise MlspecError(
                f"cannot connect to the state database at {self.where}: {self._scrub(str(exc))}",
                hint="check the server is reachable and the URL's user, password and database",
            ) from None
        try:
            self._prepare()
        except BaseException:
            self._db.close()
            raise

    def _scrub(self, text: str) -> str:
        """Text with the URL's password taken out."""
        text = text.strip().replace("\n", " ")
        return text.replace(self._secret, "***") if self._secret else text

    def _key(self, *parts: str) -> int:
        """A 64-bit advisory-lock key for this project's schema and ``parts``."""
        row = self._db.execute("SELECT hashtextextended(%s, 0)", ("/".join(("mlspec", self.schema, *parts)),))
        return int(row.fetchone()[0])  # type: ignore[index]

    def _prepare(self) -> None:
        """Create or upgrade the schema on first use (one process at a time), and check it is this project's."""
        ident = _ident(self.schema)
        self._db.execute(f"SET search_path TO {ident}")
        self._schema_key = self._key("schema")
        exists = self._db.execute("SELECT to_regclass(%s)", (f"{ident}.meta",)).fetchone()
        version = self._meta("schema_version") if exists and exists[0] is not None else None
        if version is None or int(version) < SCHEMA_VERSION:
            with self._transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (self._schema_key,))
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
                found = db.execute("SELECT to_regclass(%s)", (f"{ident}.meta",)).fetchone()
                current = int(self._meta("schema_version") or 0) if found and found[0] is not None else 0
                for step in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        db.execute(statement)
                if current == 0:
                    db.execute("INSERT INTO meta VALUES ('project', %s)", (self.project,))
                db.execute(
                    "INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = %s",
                    (str(SCHEMA_VERSION), str(SCHEMA_VERSION)),
                )
            version = str(SCHEMA_VERSION)
        if int(version) > SCHEMA_VERSION:
            raise MlspecError(
                f"the state schema '{self.schema}' at {self.where} is version {version}; "
                f"this mlspec knows version {SCHEMA_VERSION}",
                hint="upgrade mlspec; never downgrade a shared state database",
            )
        owner = self._meta("project")
        if owner != self.project:
            raise MlspecError(
                f"the state schema '{self.schema}' at {self.where} holds project '{owner}', not '{self.project}'",
                hint="give this project its own schema (state.schema in mlspec.yaml); projects never share one",
            )

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return str(row[0]) if row else None

    def close(self) -> None:
        """Close the connection (the server drops any session lock it held)."""
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        import psycopg

        try:
            with self._db.transaction():
                yield self._db
        except psycopg.OperationalError as exc:
            raise MlspecError(
                f"lost the state database at {self.where}: {self._scrub(str(exc))}",
                hint="nothing after the last committed write was recorded; run the command again",
            ) from None

    # reading
    def read(self, environment: str) -> EnvironmentState:
        """The environment's applied state (the serial is read first: never newer than the resources)."""
        serial = self._db.execute("SELECT serial FROM serials WHERE environment = %s", (environment,)).fetchone()
        rows = self._db.execute(
            "SELECT ref, data FROM resources WHERE environment = %s ORDER BY ref", (environment,)
        ).fetchall()
        resources = {ref: ResourceState.from_dict(json.loads(data)) for ref, data in rows}
        return EnvironmentState(environment, int(serial[0]) if serial else 0, resources)

    def environments(self) -> list[str]:
        """Environments that have state."""
        return [row[0] for row in self._db.execute("SELECT environment FROM serials ORDER BY environment")]

    def locks(self) -> list[LockInfo]:
        """Every lock held."""
        rows = self._db.execute(f"SELECT {LOCK_COLUMNS} FROM locks ORDER BY environment").fetchall()
        return [_lock(row) for row in rows]

    def audit(self, environment: str | None = None) -> list[AuditRecord]:
        """Audit records, oldest first."""
        query = "SELECT * FROM audit" + (" WHERE environment = %s" if environment else "") + " ORDER BY seq"
        rows = self._db.execute(query, (environment,) if environment else ()).fetchall()
        return [audit_from_row(row) for row in rows]

    def audit_head(self) -> tuple[int, str]:
        """The newest audit record's sequence number and hash (``(0, GENESIS)`` for an empty log)."""
        row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    # writing: one transaction per call
    def put(self, environment: str, resource: ResourceState, audit: AuditEntry | None = None) -> None:
        """Record one applied resource (and its audit record, in the same transaction)."""
        data = json.dumps(resource.to_dict(), sort_keys=True)
        with self._transaction() as db:
            db.execute(  # one round trip: the resource and the serial
                "WITH written AS (INSERT INTO resources VALUES (%s, %s, %s) "
                "ON CONFLICT (environment, ref) DO UPDATE SET data = EXCLUDED.data) " + BUMP,
                (environment, resource.ref, data, environment),
            )
            if audit is not None:
                self._append(db, environment, audit)

    def delete(self, environment: str, ref: str, audit: AuditEntry | None = None) -> None:
        """Forget one resource that was deleted (and record it in the audit log, in the same transaction)."""
        with self._transaction() as db:
            db.execute(
                "WITH removed AS (DELETE FROM resources WHERE environment = %s AND ref = %s) " + BUMP,
                (environment, ref, environment),
            )
            if audit is not None:
                self._append(db, environment, audit)

    def append_audit(
        self, environment: str, actor: str, revision: str, plan_hash: str, record: dict[str, Any]
    ) -> AuditRecord:
        """Append one record, chained to the last one."""
        with self._transaction() as db:
            return self._append(db, environment, (actor, revision, plan_hash, record))

    @staticmethod
    def _append(db: psycopg.Connection[tuple[Any, ...]], environment: str, audit: AuditEntry) -> AuditRecord:
        # one appender at a time, on every machine: readers are not blocked
        db.execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
        entry = chained(
            db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone(), environment, audit
        )
        db.execute("INSERT INTO audit VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", audit_row(entry))
        return entry

    # locking
    def acquire(
        self, environment: str, holder: str, operation: str, *, wait: float = 0.0, lease: float = 3600.0
    ) -> None:
        """Take the environment's lock, waiting up to ``wait`` seconds; stale locks are taken over.

        Stale: the lease ran out (server clock), the holder's connection is gone, or the holder is a
        dead process on this host.
        """
        deadline = time.monotonic() + wait
        session_key = self._key("lock", environment)
        while True:
            with self._transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (self._key("acquire", environment),))
                row = db.execute(
                    f"SELECT {LOCK_COLUMNS}, expires_at < now() FROM locks WHERE environment = %s FOR UPDATE",
                    (environment,),
                ).fetchone()
                current = _lock(row) if row else None
                if current is None or self._stale(current, bool(row and row[-1]), environment, session_key):
                    if environment not in self._held:
                        got = db.execute("SELECT pg_try_advisory_lock(%s)", (session_key,)).fetchone()
                        if got and got[0]:
                            self._held.add(environment)
                    db.execute(
                        f"INSERT INTO locks ({LOCK_COLUMNS}) "
                        "VALUES (%s, %s, %s, %s, %s, now(), date_trunc('second', now()) + make_interval(secs => %s)) "
                        "ON CONFLICT (environment) DO UPDATE SET holder = EXCLUDED.holder, host = EXCLUDED.host, "
                        "pid = EXCLUDED.pid, operation = EXCLUDED.operation, acquired_at = EXCLUDED.acquired_at, "
                        "expires_at = EXCLUDED.expires_at",
                        (environment, holder, self._host, os.getpid(), operation, float(lease)),
                    )
                    return
            if time.monotonic() >= deadline:
                raise LockedError.held_by(environment, current)
            time.sleep(0.2)

    def _stale(self, lock: LockInfo, expired: bool, environment: str, session_key: int) -> bool:
        if environment in self._held:
            return False  # this connection holds it: taken twice by one process is still taken
        if expired:
            return True
        got = self._db.execute("SELECT pg_try_advisory_lock(%s)", (session_key,)).fetchone()
        if got and got[0]:  # nobody's session holds it: the holder's connection is gone
            self._held.add(environment)
            return True
        return holder_is_gone(lock, self._host)

    def release(self, environment: str) -> None:
        """Give back a lock this process holds."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM locks WHERE environment = %s AND pid = %s AND host = %s",
                (environment, os.getpid(), self._host),
            )
            if environment in self._held:
                db.execute("SELECT pg_advisory_unlock(%s)", (self._key("lock", environment),))
                self._held.discard(environment)

    def break_lock(self, environment: str) -> LockInfo | None:
        """Remove the environment's lock whoever holds it (``mlspec state unlock``); returns what was removed."""
        with self._transaction() as db:
            row = db.execute(
                f"DELETE FROM locks WHERE environment = %s RETURNING {LOCK_COLUMNS}", (environment,)
            ).fetchone()
        return _lock(row) if row else None


def _ident(name: str) -> str:
    """A schema name as a quoted SQL identifier (names are checked against [a-z0-9_] first)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise MlspecError(f"'{name}' is not a valid state schema name (lower-case letters, digits, underscores)")
    return f'"{name}"'


def _lock(row: tuple[Any, ...]) -> LockInfo:
    acquired: dt.datetime = row[5]
    expires: dt.datetime = row[6]
    return LockInfo(
        row[0], row[1], row[2], int(row[3]), row[4],
        acquired.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
        expires.astimezone(dt.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
