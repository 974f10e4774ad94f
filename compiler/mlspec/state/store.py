"""The state interface both backends satisfy, and the factory that opens the one the project file chooses.

SQLite (a file in the repository's ``.mlspec`` folder) is the default; PostgreSQL is
chosen with ``state: {backend: postgres, url: env://NAME}``. The PostgreSQL module,
and psycopg with it, is only imported when that backend is opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlspec.errors import MlspecError
from mlspec.state.model import AuditRecord, LockInfo, ResourceState
from mlspec.state.sqlite import AuditEntry, StateReader

if TYPE_CHECKING:
    from mlspec.spec.project_file import StateConfig


class StateStore(StateReader, Protocol):
    """Applied state, audit log and environment locks: what plan, apply and the state commands use."""

    def environments(self) -> list[str]:
        """Environments that have state."""
        ...

    def put(self, environment: str, resource: ResourceState, audit: AuditEntry | None = None) -> None:
        """Record one applied resource and its audit record in one transaction."""
        ...

    def delete(self, environment: str, ref: str, audit: AuditEntry | None = None) -> None:
        """Forget one deleted resource and record it in the audit log in one transaction."""
        ...

    def append_audit(
        self, environment: str, actor: str, revision: str, plan_hash: str, record: dict[str, Any]
    ) -> AuditRecord:
        """Append one record, chained to the last one."""
        ...

    def acquire(
        self, environment: str, holder: str, operation: str, *, wait: float = 0.0, lease: float = 3600.0
    ) -> None:
        """Take the environment's lock (waiting up to ``wait`` seconds) or raise LockedError naming the holder."""
        ...

    def release(self, environment: str) -> None:
        """Give back a lock this process holds."""
        ...

    def break_lock(self, environment: str) -> LockInfo | None:
        """Remove the environment's lock whoever holds it; returns what was removed."""
        ...

    def close(self) -> None:
        """Close the store."""
        ...


def resolve_reference(ref: str) -> str:
    """The value an ``env://NAME`` or ``secret://path`` reference stands for, from the environment at run time.

    ``secret://team/db`` is read from ``MLSPEC_SECRET_TEAM_DB`` (as for every other secret reference).
    """
    scheme, _, body = ref.partition("://")
    if scheme == "env":
        variable = body
    elif scheme == "secret":
        variable = "MLSPEC_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", body).strip("_").upper()
    else:
        raise MlspecError(f"state.url must be a reference (env://NAME or secret://path), not '{scheme}://...'")
    value = os.environ.get(variable)
    if not value:
        raise MlspecError(
            f"the state database URL comes from {ref}, but the environment variable {variable} is not set",
            hint=f"export {variable}=postgresql://USER:PASSWORD@HOST:5432/DATABASE before running mlspec",
        )
    return value


def open_store(config: StateConfig, home: Path, project: str) -> StateStore:
    """Open the state backend ``config`` chooses for the project named ``project`` (files relative to ``home``)."""
    if config.backend == "postgres":
        from mlspec.state.postgres import PostgresState, default_schema

        assert config.url is not None  # the project file's validation guarantees it
        return PostgresState(
            resolve_reference(config.url), schema=config.db_schema or default_schema(project), project=project
        )
    from mlspec.state.sqlite import SqliteState

    return SqliteState(home / config.path)
