"""Before the local engines read a file source: the data is there and has the columns the specs name.

Feast and the pipeline steps fail on a missing column with a ``KeyError`` deep inside them; this check
reads only each file's column names (the parquet footer, the csv header) and says, at the spec that names
the column, what the file has instead.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from mlspec.resolve.columns import ColumnRead, column_reads
from mlspec.resolve.refs import SpecIndex
from mlspec.spec.datasource import FileSource
from mlspec.spec.suggest import did_you_mean
from mlspec.spec.validate import ParsedSpec


def file_columns(path: Path, file_format: str) -> list[str] | None:
    """The column names of a parquet or csv file; None when they cannot be read (the engines then say why)."""
    try:
        if file_format == "csv":
            with path.open(newline="", encoding="utf-8") as rows:
                return next(csv.reader(rows), [])
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def missing_files(sources: Iterable[ParsedSpec], root: Path) -> list[str]:
    """One line per file source whose file does not exist: where it is declared, its file, columns and event time."""
    missing = []
    for spec in sources:
        source = getattr(spec.model, "spec", None)
        if isinstance(source, FileSource) and not (root / source.path).exists():
            where = spec.document.locate(("spec", "path"))
            columns = ", ".join(f"{c.name} {c.dtype}" for c in source.schema_) or "no schema declared"
            missing.append(
                f"{where}: DataSource {spec.name}: {source.path} does not exist "
                f"(a {source.format} file with columns: {columns}; event time {source.timestamp_field})"
            )
    return missing


def column_problems(specs: Iterable[ParsedSpec], index: SpecIndex, root: Path) -> list[str]:
    """Columns a source's schema declares, or (without a schema) specs read, that its file does not have."""
    specs = list(specs)
    actual: dict[str, tuple[FileSource, list[str]]] = {}
    problems = []
    for spec in specs:
        source = getattr(spec.model, "spec", None)
        if not isinstance(source, FileSource) or not (root / source.path).is_file():
            continue
        found = file_columns(root / source.path, source.format)
        if found is None:
            continue
        actual[spec.name] = (source, found)
        for i, column in enumerate(source.schema_):
            if column.name not in found:
                where = spec.document.locate(("spec", "schema", i, "name"))
                problems.append(
                    f"{where}: {_absent(spec.name, source, column.name, found)}: fix the schema or the file"
                )
    reads: list[ColumnRead] = [r for r in column_reads(specs, index) if r.source in actual]
    for read in reads:
        source, found = actual[read.source]
        if not source.schema_ and read.column not in found:  # with a schema, the schema was checked above
            where = read.spec.document.locate(read.path)
            problems.append(f"{where}: {read.what}: {_absent(read.source, source, read.column, found)}")
    return problems


def _absent(name: str, source: FileSource, column: str, found: list[str]) -> str:
    guess = did_you_mean(column, found)
    has = f"did you mean '{guess}'?" if guess else f"it has {', '.join(found[:12])}{', ...' if len(found) > 12 else ''}"
    return f"column '{column}' of DataSource {name} is not in {source.path} ({has})"
