"""`mlspec init` documents the data each source expects and writes a small sample that matches it."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.scaffold.sample import describe_sources, project_specs
from mlspec.spec.datasource import DataSource
from tests.conftest import CliResult


@pytest.fixture
def project(tmp_path: Path, cli: Callable[..., CliResult]) -> Path:
    root = tmp_path / "bank-ml"
    assert cli("init", str(root)).code == 0
    return root


def sample(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "scripts/sample_data.py", *args], cwd=root, capture_output=True, text=True, check=False
    )


def test_data_md_lists_every_declared_column_with_its_type_and_use(project: Path) -> None:
    text = (project / "DATA.md").read_text(encoding="utf-8")
    sources = [s for s in project_specs(project) if isinstance(s.model, DataSource)]
    assert len(sources) == 2
    for spec in sources:
        body = spec.model.spec  # type: ignore[attr-defined]
        assert f"## {spec.name}\n" in text and f"`{body.path}`" in text
        assert f"Event time: `{body.timestamp_field}`" in text
        for column in body.schema_:
            assert f"| `{column.name}` | {column.dtype} |" in text
    assert "| `churned` | int64 | label of TrainingPipeline churn-model |" in text
    assert "| `sessions_30d` | int64 | feature of FeatureView customer-activity-features |" in text
    assert "join key of entity customer" in text
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "DATA.md" in readme and "scripts/sample_data.py" in readme


def test_describe_prints_what_init_wrote(project: Path) -> None:
    result = sample(project, "--describe")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (project / "DATA.md").read_text(encoding="utf-8")


def test_sample_matches_the_declared_schemas_and_joins(project: Path, cli: Callable[..., CliResult]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    result = sample(project)
    assert result.returncode == 0, result.stderr
    tables = {}
    for source in describe_sources(project_specs(project)):
        assert source.path is not None
        table = pq.read_table(project / source.path)
        assert table.column_names == [c[0] for c in source.columns]
        for name, dtype, _ in source.columns:
            arrow = str(table.schema.field(name).type)
            assert arrow.startswith("timestamp") if dtype == "unix_timestamp" else arrow in {dtype, "float"}, name
        tables[source.name] = table.to_pydict()
    features, labels = tables["customer-activity"], tables["churn-labels"]
    assert set(labels["customer_id"]) <= set(features["customer_id"])  # every label row finds its features
    assert set(labels["churned"]) == {0, 1}
    assert max(labels["event_ts"]) <= max(features["event_ts"])
    assert cli("validate", str(project)).code == 0


def test_a_csv_source_gets_a_csv_sample(project: Path) -> None:
    data = project / "specs" / "data.yaml"
    data.write_text(
        data.read_text(encoding="utf-8").replace(
            "path: data/churn_labels.parquet", "path: data/churn_labels.csv\n  format: csv"
        ),
        encoding="utf-8",
    )
    result = sample(project)
    assert result.returncode == 0, result.stderr
    with (project / "data" / "churn_labels.csv").open(encoding="utf-8") as rows:
        read = list(csv.DictReader(rows))
    assert list(read[0]) == ["customer_id", "event_ts", "churned"] and len(read) > 10


def test_outside_a_project_the_script_says_so(tmp_path: Path, project: Path) -> None:
    script = project / "scripts" / "sample_data.py"
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "no mlspec.yaml" in result.stderr and "Traceback" not in result.stderr
