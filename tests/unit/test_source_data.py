"""Before the local engines read a file source, its columns are checked against what the specs name."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlspec.app.validation import validate_files
from mlspec.resolve.refs import SpecIndex
from mlspec.targets.local.source_data import column_problems, file_columns, missing_files
from tests.conftest import write_files

SPECS = """\
apiVersion: mlspec/v1
kind: DataSource
metadata: {name: txns}
spec:
  type: file
  path: data/txns.csv
  format: csv
  timestamp_field: event_ts
  region: uae-north
  classification: pii
SCHEMA
---
apiVersion: mlspec/v1
kind: Entity
metadata: {name: customer}
spec: {join_keys: [customer_id], value_type: int64}
---
apiVersion: mlspec/v1
kind: FeatureView
metadata: {name: stats}
spec:
  entities: [customer]
  source: txns
  ttl: 7d
  features:
    - {name: txn_count, dtype: int64}
"""
SCHEMA = """\
  schema:
    - {name: customer_id, dtype: int64}
    - {name: event_ts, dtype: unix_timestamp}
    - {name: txn_count, dtype: int64}"""


def problems(tmp_path: Path, schema: str, header: str | None) -> list[str]:
    files: dict[str, str | bytes] = {"specs/all.yaml": SPECS.replace("SCHEMA\n", schema + "\n" if schema else "")}
    if header is not None:
        files["data/txns.csv"] = header + "\n1,2026-01-01T00:00:00Z,3\n"
    write_files(tmp_path, files)
    result = validate_files([tmp_path / "specs/all.yaml"])
    assert result.diagnostics == ()
    index = SpecIndex(result.specs)
    return column_problems(result.specs, index, tmp_path) + missing_files(result.specs, tmp_path)


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def test_data_with_every_column_passes(tmp_path: Path) -> None:
    assert problems(tmp_path, SCHEMA, "customer_id,event_ts,txn_count") == []
    assert problems(tmp_path, "", "customer_id,event_ts,txn_count") == []


def test_a_declared_column_the_file_lacks_is_named_at_the_schema(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, SCHEMA, "customer_id,event_ts,txn_cnt")
    text = (tmp_path / "specs/all.yaml").read_text()
    line = line_of(text, "    - {name: txn_count")
    assert f"/specs/all.yaml:{line}:14: column 'txn_count' of DataSource txns is not in data/txns.csv" in message
    assert "(did you mean 'txn_cnt'?): fix the schema or the file" in message


def test_without_a_schema_the_columns_specs_read_are_checked(tmp_path: Path) -> None:
    found = problems(tmp_path, "", "id,event_ts,txn_count")
    text = (tmp_path / "specs/all.yaml").read_text()
    (message,) = found
    line = line_of(text, "  entities: [customer]")
    assert f"/specs/all.yaml:{line}:14: join key 'customer_id' of entity 'customer': column" in message
    assert "is not in data/txns.csv (it has id, event_ts, txn_count)" in message


def test_a_missing_file_names_its_declared_columns(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, SCHEMA, None)
    assert "/specs/all.yaml:6:9: DataSource txns: data/txns.csv does not exist" in message
    assert "(a csv file with columns: customer_id int64, event_ts unix_timestamp, txn_count int64; " in message
    assert message.endswith("event time event_ts)")


def test_parquet_columns_come_from_the_footer(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), tmp_path / "x.parquet")
    assert file_columns(tmp_path / "x.parquet", "parquet") == ["a", "b"]
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert file_columns(tmp_path / "broken.parquet", "parquet") is None
