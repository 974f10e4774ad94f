"""The data a project's sources expect, described and sampled from the specs themselves.

`mlspec init` writes DATA.md from the new project's DataSource specs (columns, types, the event-time column,
what each column is used for). `python scripts/sample_data.py` in that project writes a few rows for every
file source, matching its declared schema, so `mlspec apply --env local` has data to work on before the
real data is there; `--describe` prints DATA.md again after the specs change.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlspec.load import Limits, load_file
from mlspec.load.discovery import PROJECT_FILE, find_project_root, yaml_files
from mlspec.spec.datasource import DataSource, FileSource
from mlspec.spec.entity import Entity
from mlspec.spec.features import FeatureView
from mlspec.spec.project_file import ProjectFile
from mlspec.spec.registry import RESOURCE_KINDS
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec, validate_document

ENTITIES = 50  # distinct entity keys in a sample
DAYS = 6  # rows per entity, one a day up to today
TIME_TYPES = {"unix_timestamp"}


@dataclass
class SourceData:
    """One DataSource as the data it expects: where, in which format, which columns, and what uses them."""

    name: str
    location: str
    kind: str
    path: str | None
    format: str
    timestamp_field: str
    columns: list[tuple[str, str, str]]  # name, dtype, description
    roles: dict[str, list[str]] = field(default_factory=dict)  # column -> what uses it
    keys: dict[str, str] = field(default_factory=dict)  # join-key column -> entity value type
    labels: dict[str, str] = field(default_factory=dict)  # label column -> model task


def project_specs(root: Path) -> list[ParsedSpec]:
    """The valid specs of the project at ``root`` (what `mlspec validate` reports is not repeated here)."""
    folders = ["specs"]
    documents, _ = load_file(root / PROJECT_FILE, PROJECT_FILE, Limits())
    if documents and isinstance(documents[0].data, dict):
        with contextlib.suppress(ValueError):  # an invalid project file: validate reports it
            folders = list(ProjectFile.model_validate(documents[0].data).spec.specs)
    specs: list[ParsedSpec] = []
    for folder in folders:
        for path in yaml_files(root / folder):
            loaded, _ = load_file(path, path.relative_to(root).as_posix(), Limits())
            for document in loaded:
                parsed, _ = validate_document(document, RESOURCE_KINDS)
                if parsed is not None:
                    specs.append(parsed)
    return specs


def describe_sources(specs: Sequence[ParsedSpec]) -> list[SourceData]:
    """Every DataSource with the columns it declares and what the other specs read from it."""
    sources: dict[str, SourceData] = {}
    for spec in specs:
        if isinstance(spec.model, DataSource):
            body = spec.model.spec
            sources[spec.name] = SourceData(
                spec.name,
                str(spec.document.locate(("metadata", "name"))),
                body.type,
                body.path if isinstance(body, FileSource) else None,
                getattr(body, "format", "parquet"),
                body.timestamp_field,
                [(c.name, c.dtype, c.description or "") for c in body.schema_],
            )
            sources[spec.name].roles[body.timestamp_field] = ["event time (timestamp_field)"]
    entities: dict[str, Any] = {s.name: s.model.spec for s in specs if isinstance(s.model, Entity)}
    for spec in specs:
        model = spec.model
        if isinstance(model, FeatureView) and model.spec.source in sources:
            source = sources[model.spec.source]
            for entity in model.spec.entities:
                for key in entities[entity].join_keys if entity in entities else []:
                    source.roles.setdefault(key, []).append(f"join key of entity {entity}")
                    source.keys[key] = entities[entity].value_type
            for feature in model.spec.features:
                source.roles.setdefault(feature.name, []).append(f"feature of FeatureView {spec.name}")
        elif isinstance(model, TrainingPipeline) and model.spec.label.source in sources:
            source = sources[model.spec.label.source]
            source.roles.setdefault(model.spec.label.field, []).append(f"label of TrainingPipeline {spec.name}")
            source.labels[model.spec.label.field] = model.spec.model.task
            rows = sources.get(model.spec.entity_source or model.spec.label.source)
            _mark_keys(rows, entities, f"key of the rows TrainingPipeline {spec.name} trains on")
        elif (batch := getattr(getattr(model, "spec", None), "batch", None)) is not None:
            _mark_keys(sources.get(batch.entities), entities, f"key of the rows Deployment {spec.name} scores")
    return list(sources.values())


def _mark_keys(source: SourceData | None, entities: dict[str, Any], role: str) -> None:
    """Rows that features are joined onto carry the entities' keys (whichever of them the source declares)."""
    if source is None:
        return
    declared = {column[0] for column in source.columns}
    for entity in entities.values():
        for key in entity.join_keys:
            if key in declared:
                source.keys[key] = entity.value_type
                if role not in source.roles.setdefault(key, []):
                    source.roles[key].append(role)


def data_markdown(sources: Sequence[SourceData]) -> str:
    """DATA.md: per source, where the data goes and a table of its columns."""
    lines = [
        "# Data this project expects",
        "",
        "Each DataSource in `specs/` declares the columns its data has (`schema`); `mlspec validate` checks",
        "that every feature, label and join key the other specs read is one of them. Put files with these",
        "columns at the paths below, or write a small sample that matches them with",
        "`python scripts/sample_data.py` (a few rows per file source, in `data/`, which git ignores).",
        "After changing the specs, refresh this page with `python scripts/sample_data.py --describe > DATA.md`.",
        "",
    ]
    for source in sources:
        where = f"`{source.path}` ({source.format})" if source.path else f"a {source.kind} source"
        lines += [f"## {source.name}", "", f"Declared at `{source.location}`; data in {where}.", ""]
        lines.append(f"Event time: `{source.timestamp_field}` (the time each row's values were true).")
        if not source.columns:
            lines += ["", "No `schema` declared: add one so that validate can check the columns specs read.", ""]
            continue
        lines += ["", "| Column | Type | Used as | Description |", "|---|---|---|---|"]
        for name, dtype, description in source.columns:
            lines.append(f"| `{name}` | {dtype} | {'; '.join(source.roles.get(name, [])) or '-'} | {description} |")
        lines.append("")
    return "\n".join(lines)


def _value(source: SourceData, column: str, dtype: str, entity: int, rng: random.Random) -> Any:
    if column in source.keys:
        return entity if source.keys[column] == "int64" else f"{column}-{entity}"
    # Odd and even entities differ in every numeric value and mostly in the label, so that a model trained on
    # the sample learns something and its evaluation gates can pass.
    group = entity % 2
    task = source.labels.get(column)
    if task == "binary_classification":
        return group if rng.random() < 0.9 else 1 - group
    if task == "multiclass_classification":
        return entity % 3
    if task == "regression" or dtype.startswith("float"):
        return round(rng.uniform(0, 50) + 50 * group, 3)
    if dtype.startswith("int"):
        return rng.randint(0, 25) + 25 * group
    if dtype == "bool":
        return rng.random() < 0.5
    return f"{column}-{rng.randint(0, 4)}"


def sample_rows(source: SourceData, today: dt.date, seed: int = 7) -> list[dict[str, Any]]:
    """``ENTITIES`` x ``DAYS`` rows matching the declared schema; keys shared by every source, times up to today."""
    rng = random.Random(f"{seed}-{source.name}")
    start = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=DAYS - 1)
    rows = []
    for day in range(DAYS):
        when = start + dt.timedelta(days=day)
        for entity in range(1, ENTITIES + 1):
            row = {}
            for column, dtype, _ in source.columns:
                scalar = dtype.removesuffix("_list")
                is_time = dtype in TIME_TYPES or column == source.timestamp_field
                value = when if is_time else _value(source, column, scalar, entity, rng)
                row[column] = [value] if dtype.endswith("_list") else value
            rows.append(row)
    return rows


def write_sample(root: Path, source: SourceData, today: dt.date) -> Path:
    """Write the sample file of one file source (parquet needs pyarrow, csv needs nothing)."""
    assert source.path is not None
    target = Path(source.path) if Path(source.path).is_absolute() else root / source.path
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = sample_rows(source, today)
    if source.format == "csv":
        with target.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=[c[0] for c in source.columns])
            writer.writeheader()
            writer.writerows(
                {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()} for row in rows
            )
        return target
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(),
        "string": pa.string(), "bool": pa.bool_(), "bytes": pa.binary(), "unix_timestamp": pa.timestamp("us", tz="UTC"),
    }  # fmt: skip
    fields = []
    for name, dtype, _ in source.columns:
        scalar = types["unix_timestamp"] if name == source.timestamp_field else types[dtype.removesuffix("_list")]
        fields.append(pa.field(name, pa.list_(scalar) if dtype.endswith("_list") else scalar))
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python scripts/sample_data.py [--describe]`` in a project: write the sample files, or print DATA.md."""
    parser = argparse.ArgumentParser(description="Sample data matching the DataSource schemas of this project.")
    parser.add_argument("--describe", action="store_true", help="print the data each source expects (DATA.md)")
    args = parser.parse_args(argv)
    root = find_project_root(Path.cwd())
    if root is None:
        sys.stderr.write(f"no {PROJECT_FILE} here or above: run this inside an mlspec project\n")
        return 2
    sources = describe_sources(project_specs(root))
    if args.describe:
        sys.stdout.write(data_markdown(sources))
        return 0
    for source in sources:
        if source.path is None or not source.columns:
            why = "it is not a file source" if source.path is None else "it declares no schema"
            sys.stdout.write(f"skipped {source.name} ({source.location}): {why}\n")
            continue
        today = dt.datetime.now(dt.UTC).date()
        target = write_sample(root, source, today)
        sys.stdout.write(f"wrote {len(sample_rows(source, today))} rows for {source.name} to {target}\n")
    return 0
