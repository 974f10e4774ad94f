"""The factory that opens the state backend the project file chooses (the interface is in ``state/base.py``).

SQLite (a file in the repository's ``.mlspec`` folder) is the default; PostgreSQL is
chosen with ``state: {backend: postgres, url: env://NAME}``. The PostgreSQL module,
and psycopg with it, is only imported when that backend is opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import MlspecError
from mlspec.state.base import StateStore

if TYPE_CHECKING:
    from mlspec.spec.project_file import StateConfig


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
    """Open the state backend ``config`` chooses for the project named ``project`` (files relative to ``home``).

    The store is a context manager: ``with open_store(...) as store:`` closes it after the block.
    """
    if config.backend == "postgres":
        from mlspec.state.postgres import PostgresState, default_schema

        assert config.url is not None  # the project file's validation guarantees it
        return PostgresState(
            resolve_reference(config.url), schema=config.db_schema or default_schema(project), project=project
        )
    from mlspec.state.sqlite import SqliteState

    return SqliteState(home / config.path)
