"""Where a batch run's predictions go: a parquet dataset (one folder per run, visible when complete) or a
PostgreSQL table (one transaction per run)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.runtime.context import RuntimeContext, resolve_reference

if TYPE_CHECKING:
    import pyarrow as pa

PART = "part-{:05d}.parquet"


class BatchError(RuntimeError):
    """A batch run cannot go on: the entity source, the model or the sink is not what the run needs."""


class ParquetSink:
    """One run as ``<root>/run=<stamp>/part-*.parquet``: written under a hidden name, renamed when complete."""

    def __init__(self, root: Path, stamp: str) -> None:
        self.root = root
        self.final = root / f"run={stamp}"
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".run=*.tmp"):  # a crashed run's parts: never visible, removed now
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = root / f".run={stamp}.{uuid.uuid4().hex[:8]}.tmp"
        self.tmp.mkdir()
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        """Write one chunk as the next part file (flushed to disk)."""
        import pyarrow.parquet as pq

        path = self.tmp / PART.format(self.parts)
        with open(path, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        self.parts += 1

    def commit(self) -> str:
        """Make the run visible at once; returns its folder."""
        if self.final.exists():
            raise BatchError(f"{self.final} exists already; refusing to overwrite a finished run")
        _fsync_dir(self.tmp)
        os.rename(self.tmp, self.final)
        _fsync_dir(self.root)
        return str(self.final)

    def abort(self) -> None:
        """Drop the parts written so far."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pg_type(kind: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_integer(kind):
        return "BIGINT"
    if pa.types.is_floating(kind):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    return "TEXT"


class TableSink:
    """One run into a PostgreSQL table, in one transaction: created when missing, the run's rows replaced by COPY."""

    def __init__(self, url: str, table: str, schema: pa.Schema, run_id: str) -> None:
        import psycopg
        from psycopg import sql

        self.table = table
        self.columns = schema.names
        self._error = psycopg.Error
        parts = table.split(".")
        self.target = sql.Identifier(*parts)
        try:
            self.connection = psycopg.connect(url, connect_timeout=15)
        except psycopg.Error as exc:  # the message names host and user at most, never the password
            raise BatchError(f"cannot connect to the database of table {table}: {_first_line(exc)}") from None
        try:
            with self.connection.cursor() as cursor:
                if len(parts) > 1:
                    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(*parts[:-1])))
                columns = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(field.name), sql.SQL(_pg_type(field.type)))
                    for field in schema
                )
                cursor.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.target, columns))
                cursor.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(self.target), (run_id,))
            self.cursor = self.connection.cursor()
            names = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
            self.copy_context = self.cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(self.target, names))
            self.copy = self.copy_context.__enter__()
        except psycopg.Error as exc:
            self.abort()
            raise BatchError(f"cannot write predictions to table {table}: {_first_line(exc)}") from None
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        """COPY one chunk's rows."""
        data = table.to_pydict()
        try:
            for row in zip(*(data[c] for c in self.columns), strict=True):
                self.copy.write_row(row)
        except self._error as exc:
            self.abort()
            raise BatchError(f"cannot write predictions to table {self.table}: {_first_line(exc)}") from None
        self.parts += 1

    def commit(self) -> str:
        """End the COPY and commit: the run's rows appear at once."""
        try:
            self.copy_context.__exit__(None, None, None)
            self.connection.commit()
        except self._error as exc:
            self.abort()
            raise BatchError(f"cannot write predictions to table {self.table}: {_first_line(exc)}") from None
        finally:
            self.connection.close()
        return self.table

    def abort(self) -> None:
        """Roll the transaction back: none of the run's rows were written."""
        with contextlib.suppress(Exception):  # the connection may be broken already; closing is all that is left
            self.connection.rollback()
        self.connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_sink(
    ctx: RuntimeContext, sink: dict[str, Any], schema: pa.Schema, run_id: str, scored_at: dt.datetime
) -> ParquetSink | TableSink:
    """The sink a run writes to: the table when the spec names one, else a parquet folder per run."""
    if sink.get("table"):
        connection = sink.get("connection")
        if not connection:
            raise BatchError(f"table sink {sink['table']} has no connection reference")
        try:
            url = resolve_reference(connection)
        except LookupError as exc:
            raise BatchError(f"the connection of table sink {sink['table']}: {exc}") from None
        return TableSink(url, sink["table"], schema, run_id)
    root = Path(ctx.data_dir) / sink["path"]
    return ParquetSink(root, scored_at.strftime("%Y%m%dT%H%M%S.%fZ"))
