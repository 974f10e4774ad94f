"""The field reference users read: every spec field described, docs/reference.md generated and current."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from mlspec.spec import reference
from mlspec.spec.base import Metadata, StrictModel
from mlspec.spec.registry import ALL_KINDS
from mlspec.spec.schema import kind_schema
from tests.conftest import REPO


# Deployment's descriptions come with its rewrite into one model per mode (the spec-types branch);
# drop this exemption when that branch is merged.
def test_every_spec_field_has_a_description() -> None:
    missing = reference.missing_descriptions()
    assert missing == [], "describe these fields with Field(description=...)"


def test_a_field_without_description_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    class Inner(StrictModel):
        """A nested section."""

        depth: int = 1

    class Thing(StrictModel):
        """A kind made up for the test."""

        metadata: Metadata = Field(description="Name and owner.")
        inner: list[Inner] = Field(default_factory=list, description="Nested items.")

    monkeypatch.setattr(reference, "ALL_KINDS", {"Thing": Thing})
    assert [m.rsplit(".", 2)[-2:] for m in reference.missing_descriptions()] == [["Inner", "depth"]]


def test_editors_get_the_descriptions_through_the_json_schema() -> None:
    schema = kind_schema("TrainingPipeline")
    label = schema["$defs"]["Label"]["properties"]
    assert label["field"]["description"].startswith("The label column in that source")
    datasource = kind_schema("DataSource")["$defs"]
    assert "declared" in datasource["FileSource"]["properties"]["schema"]["description"]


def test_committed_reference_is_current() -> None:
    committed = (REPO / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == reference.reference_markdown(), f"docs/reference.md is stale: run {reference.REGENERATE}"


def test_reference_has_a_table_per_kind_with_every_field(tmp_path: Path) -> None:
    out = tmp_path / "reference.md"
    assert reference.main([str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    for kind in ALL_KINDS:
        assert f"\n## {kind}\n" in text
    assert (
        "| `spec.label.field` | column name | required | The label column in that source (the value the model "
        "learns to predict). |" in text
    )
    assert '| `spec.format (type: file)` | `"parquet"` \\| `"csv"` | default `"parquet"` | File format. |' in text
    assert "| `spec.schedule` | cron | optional |" in text
    # every row has four cells: no unescaped '|' inside a cell breaks the table
    for line in text.splitlines():
        if line.startswith("| `"):
            assert line.replace("\\|", "").count("|") == 5, line
