"""What apply would fail on, validate finds first: columns not in a source's schema, duplicates, unknown or
misfit metrics, bad cron. Each is a located error of `mlspec validate` on real files."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlspec.runtime import metrics as runtime_metrics
from mlspec.spec.training import CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS
from tests.conftest import CliResult

PLATFORM = """\
apiVersion: mlspec/v1
kind: DataSource
metadata: {name: txns, owner: payments}
spec:
  type: file
  path: data/txns.parquet
  timestamp_field: event_ts
  region: uae-north
  classification: pii
  schema:
    - {name: customer_id, dtype: int64}
    - {name: event_ts, dtype: unix_timestamp}
    - {name: txn_count_7d, dtype: int64}
    - {name: txn_amount_avg_7d, dtype: float32}
---
apiVersion: mlspec/v1
kind: DataSource
metadata: {name: labels, owner: payments}
spec:
  type: file
  path: data/labels.parquet
  timestamp_field: event_ts
  region: uae-north
  classification: confidential
  schema:
    - {name: customer_id, dtype: int64}
    - {name: event_ts, dtype: unix_timestamp}
    - {name: is_fraud, dtype: int64}
---
apiVersion: mlspec/v1
kind: DataSource
metadata: {name: to-score, owner: payments}
spec:
  type: file
  path: data/to_score.parquet
  timestamp_field: event_ts
  region: uae-north
  classification: confidential
  schema:
    - {name: customer_id, dtype: int64}
    - {name: event_ts, dtype: unix_timestamp}
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
    - {name: txn_count_7d, dtype: int64}
    - {name: txn_amount_avg_7d, dtype: float32}
---
apiVersion: mlspec/v1
kind: FeatureService
metadata: {name: fraud-features}
spec:
  features: [{view: stats}]
---
apiVersion: mlspec/v1
kind: TrainingPipeline
metadata: {name: fraud-detector}
spec:
  features: fraud-features
  label: {source: labels, field: is_fraud}
  model:
    task: binary_classification
    architecture: {type: mlp, hidden: [16]}
  evaluation:
    metrics: [auc, recall]
    gates: {auc: ">= 0.8", recall: ">= 0.5"}
  schedule: "0 2 * * *"
---
apiVersion: mlspec/v1
kind: Deployment
metadata: {name: fraud-batch}
spec:
  mode: batch
  model: {name: fraud-detector}
  batch:
    entities: to-score
    sink: {path: predictions/fraud}
    schedule: "30 3 * * 1-5"
"""


def validate(tmp_path: Path, cli: Callable[..., CliResult], text: str) -> tuple[Path, list[dict[str, Any]]]:
    """Write ``text`` as a real spec file, run `mlspec validate` on it; returns the file and the diagnostics."""
    path = tmp_path / "specs" / "platform.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    result = cli("validate", "--format", "json", str(path))
    report = json.loads(result.out)
    assert result.code == (1 if report["diagnostics"] else 0)
    return path, report["diagnostics"]


def position(text: str, line_marker: str, token: str) -> tuple[int, int]:
    """1-based (line, column) of ``token`` on the only line that contains ``line_marker``."""
    (line,) = [i for i, line in enumerate(text.splitlines(), 1) if line_marker in line]
    return line, text.splitlines()[line - 1].index(token, text.splitlines()[line - 1].index(line_marker)) + 1


def only_error(tmp_path: Path, cli: Callable[..., CliResult], text: str) -> dict[str, Any]:
    _, diagnostics = validate(tmp_path, cli, text)
    assert len(diagnostics) == 1, diagnostics
    (d,) = diagnostics
    assert d["file"].endswith("platform.yaml") and d["severity"] == "error"
    return d


def edit(old: str, new: str) -> str:
    assert PLATFORM.count(old) == 1, old
    return PLATFORM.replace(old, new)


def test_the_platform_is_valid(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    _, diagnostics = validate(tmp_path, cli, PLATFORM)
    assert diagnostics == []


def test_feature_not_in_the_source_schema(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    view_end = "    - {name: txn_amount_avg_7d, dtype: float32}\n---\napiVersion: mlspec/v1\nkind: FeatureService"
    text = edit(
        "    - {name: txn_count_7d, dtype: int64}\n" + view_end, "    - {name: txn_cnt_7d, dtype: int64}\n" + view_end
    )
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "{name: txn_cnt_7d", "txn_cnt_7d")
    assert d["code"] == "unknown-reference" and d["path"] == "spec.features[0].name"
    assert d["message"] == "feature 'txn_cnt_7d' is not a column of DataSource 'txns'"
    assert d["hint"] == "did you mean 'txn_count_7d'?"
    schema_start = text.splitlines().index("    - {name: customer_id, dtype: int64}") + 1  # txns comes first
    assert (d["related"][0]["line"], d["related"][0]["column"]) == (schema_start, 5)


def test_label_field_not_in_the_label_source(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    text = edit("field: is_fraud}", "field: is_frod}")
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "field: is_frod", "is_frod")
    assert d["code"] == "unknown-reference" and d["path"] == "spec.label.field"
    assert d["message"] == "label field 'is_frod' is not a column of DataSource 'labels'"
    assert d["hint"] == "did you mean 'is_fraud'?"


def test_label_timestamp_and_far_off_names_list_the_schema(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    text = edit("field: is_fraud}", "field: is_fraud, timestamp_field: zzz}")
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "timestamp_field: zzz", "zzz")
    assert d["message"] == "label timestamp field 'zzz' is not a column of DataSource 'labels'"
    assert "declares customer_id, event_ts, is_fraud" in d["hint"] and "add 'zzz' to the schema" in d["hint"]


def test_join_keys_must_be_in_the_view_source_and_the_rows_sources(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    text = edit("spec: {join_keys: [customer_id]", "spec: {join_keys: [client_id]")
    _, diagnostics = validate(tmp_path, cli, text)
    found = {(d["path"], d["line"], d["column"]): d["message"] for d in diagnostics}
    view = position(text, "  entities: [customer]", "customer")
    label = position(text, "label: {source: labels", "labels")
    batch = position(text, "entities: to-score", "to-score")
    assert found == {
        ("spec.entities[0]", *view): "join key 'client_id' of entity 'customer' is not a column of DataSource 'txns'",
        ("spec.label.source", *label): "join key 'client_id' of FeatureService 'fraud-features' (the training "
        "rows are joined on it) is not a column of DataSource 'labels'",
        ("spec.batch.entities", *batch): "join key 'client_id' of FeatureService 'fraud-features' (the rows "
        "scored are joined on it) is not a column of DataSource 'to-score'",
    }


def test_a_source_without_schema_is_not_checked(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    start = PLATFORM.index("  schema:\n    - {name: customer_id, dtype: int64}\n    - {name: event_ts")
    end = PLATFORM.index("---", start)
    _, diagnostics = validate(tmp_path, cli, PLATFORM[:start] + PLATFORM[end:])
    assert diagnostics == []


@pytest.mark.parametrize(
    ("old", "new", "marker", "token", "path", "message"),
    [
        (
            "    - {name: txn_amount_avg_7d, dtype: float32}\n---\napiVersion: mlspec/v1\nkind: DataSource",
            "    - {name: txn_count_7d, dtype: float32}\n---\napiVersion: mlspec/v1\nkind: DataSource",
            "{name: txn_count_7d, dtype: float32}",
            "txn_count_7d",
            "spec.schema[3].name",
            "'spec.schema[3].name': column 'txn_count_7d' is declared twice (first at schema[2]); remove or rename one",
        ),
        (
            "path: data/txns.parquet\n  timestamp_field: event_ts",
            "path: data/txns.parquet\n  timestamp_field: event_time",
            "timestamp_field: event_time",
            "event_time",
            "spec.timestamp_field",
            "'spec.timestamp_field': column 'event_time' is not in the source's schema; did you mean 'event_ts'?",
        ),
        (
            "    - {name: txn_amount_avg_7d, dtype: float32}\n---\napiVersion: mlspec/v1\nkind: FeatureService",
            "    - {name: txn_count_7d, dtype: float32}\n---\napiVersion: mlspec/v1\nkind: FeatureService",
            "{name: txn_count_7d, dtype: float32}",
            "txn_count_7d",
            "spec.features[1].name",
            "'spec.features[1].name': feature 'txn_count_7d' is declared twice",
        ),
        (
            "features: [{view: stats}]",
            "features: [{view: stats, fields: [txn_count_7d, txn_count_7d]}]",
            "fields: [txn_count_7d, txn_count_7d]",
            "txn_count_7d]",
            "spec.features[0].fields[1]",
            "'spec.features[0].fields[1]': feature 'txn_count_7d' is selected twice",
        ),
        (
            "features: [{view: stats}]",
            "features: [{view: stats}, {view: stats}]",
            "features: [{view: stats}, {view: stats}]",
            "stats}]",
            "spec.features[1].view",
            "'spec.features[1].view': view 'stats' is selected twice (first at features[0]); "
            "list its fields in one selection",
        ),
    ],
    ids=["source-column", "timestamp-field", "view-feature", "service-field", "service-view"],
)
def test_duplicates_and_own_columns(
    tmp_path: Path,
    cli: Callable[..., CliResult],
    old: str,
    new: str,
    marker: str,
    token: str,
    path: str,
    message: str,
) -> None:
    text = edit(old, new)
    d = only_error(tmp_path, cli, text)
    assert (d["code"], d["path"], d["message"]) == ("invalid-value", path, message)
    assert (d["line"], d["column"]) == position(text, marker, token)


def test_a_feature_name_from_two_views(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    second_view = PLATFORM[
        PLATFORM.index("apiVersion: mlspec/v1\nkind: FeatureView") : PLATFORM.index(
            "apiVersion: mlspec/v1\nkind: FeatureService"
        )
    ].replace("{name: stats}", "{name: stats-copy}")
    text = edit("features: [{view: stats}]", "features: [{view: stats}, {view: stats-copy, fields: [txn_count_7d]}]")
    text = text.replace(
        "apiVersion: mlspec/v1\nkind: FeatureService", second_view + "apiVersion: mlspec/v1\nkind: FeatureService"
    )
    d = only_error(tmp_path, cli, text)
    assert d["code"] == "duplicate-name" and d["path"] == "spec.features[1].fields[0]"
    assert (d["line"], d["column"]) == position(text, "fields: [txn_count_7d]", "txn_count_7d")
    assert "'txn_count_7d' is selected from FeatureView 'stats' and again from 'stats-copy'" in d["message"]


def test_gate_metric_no_evaluator_knows(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    text = edit('recall: ">= 0.5"}', 'recal: ">= 0.5"}')
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "gates: {", "recal")
    assert d["code"] == "unknown-field" and d["path"] == "spec.evaluation.gates.recal"
    assert d["message"].startswith("unknown key 'recal' in 'spec.evaluation.gates'; expected one of auc, accuracy")
    assert d["hint"] == "did you mean 'recall'?"


def test_search_metric_no_evaluator_knows(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    search = "  search: {trials: 4, metric: aucc, space: {learning_rate: {low: 0.001, high: 0.1}}}\n"
    text = edit("  evaluation:\n", search + "  evaluation:\n")
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "metric: aucc", "aucc")
    assert d["code"] == "invalid-value" and d["path"] == "spec.search.metric"
    assert d["hint"] == "did you mean 'auc'?"


def test_gate_metric_that_does_not_fit_the_task(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    text = edit('recall: ">= 0.5"}', 'rmse: "< 0.5"}')
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "gates: {", '"< 0.5"')
    assert d["code"] == "invalid-value" and d["path"] == "spec.evaluation.gates.rmse"
    assert d["message"] == (
        "'spec.evaluation.gates.rmse': metric 'rmse' does not apply to a classification model "
        "(task: binary_classification); use one of auc, accuracy, precision, recall, f1, logloss"
    )


def test_regression_with_the_default_metrics(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    text = edit("    task: binary_classification", "    task: regression").replace(
        '    metrics: [auc, recall]\n    gates: {auc: ">= 0.8", recall: ">= 0.5"}\n', "    test_fraction: 0.25\n"
    )
    d = only_error(tmp_path, cli, text)
    assert "metric 'auc' (the default) does not apply to a regression model" in d["message"]
    assert d["message"].endswith("use one of rmse, mae, r2")
    assert d["line"] == position(text, "test_fraction: 0.25", "test_fraction")[0]  # the evaluation section


@pytest.mark.parametrize(
    ("old", "new", "bad", "reason"),
    [
        ('schedule: "0 2 * * *"', 'schedule: "0 25 * * *"', '"0 25 * * *"', "'25' is outside 0-23 in the hour field"),
        ('schedule: "0 2 * * *"', 'schedule: "0 2 * * mon-fry"', '"0 2 * * mon-fry"', "'fry' is not a number"),
        ('schedule: "30 3 * * 1-5"', 'schedule: "30 3 31 2-1 *"', '"30 3 31 2-1 *"', "ends before it starts"),
        ('schedule: "30 3 * * 1-5"', 'schedule: "*/0 3 * * *"', '"*/0 3 * * *"', "'*/0' has a bad step"),
        ('schedule: "0 2 * * *"', 'schedule: "0 2 30 2 *"', '"0 2 30 2 *"', "never fires"),
    ],
    ids=["training-hour", "training-weekday", "batch-month-range", "batch-step", "training-february-30"],
)
def test_invalid_cron_in_any_schedule(
    tmp_path: Path, cli: Callable[..., CliResult], old: str, new: str, bad: str, reason: str
) -> None:
    text = edit(old, new)
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, bad, bad)
    assert d["code"] == "invalid-value" and d["path"].endswith("schedule")
    assert d["message"].startswith(f"'{d['path']}': ") and reason in d["message"]


def test_the_validator_knows_exactly_the_runtime_evaluators() -> None:
    assert set(METRICS) == runtime_metrics.CLASSIFICATION | runtime_metrics.REGRESSION
    assert runtime_metrics.CLASSIFICATION == CLASSIFICATION_METRICS
    assert runtime_metrics.REGRESSION == REGRESSION_METRICS


def test_drift_monitoring_watches_only_features_the_model_gets(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    online = (
        "---\napiVersion: mlspec/v1\nkind: Deployment\nmetadata: {name: fraud-api}\nspec:\n"
        "  model: {name: fraud-detector}\n"
        "  monitoring: {drift: {method: psi, features: [txn_count_7d, txn_amount_avg]}}\n"
    )
    text = PLATFORM + online
    d = only_error(tmp_path, cli, text)
    assert (d["line"], d["column"]) == position(text, "features: [txn_count_7d, txn_amount_avg]", "txn_amount_avg]")
    assert d["code"] == "unknown-reference" and d["path"] == "spec.monitoring.drift.features[1]"
    assert d["message"] == (
        "drift monitoring watches feature 'txn_amount_avg', which FeatureService 'fraud-features' does not give the model"
    )
    assert d["hint"] == "did you mean 'txn_amount_avg_7d'?"
