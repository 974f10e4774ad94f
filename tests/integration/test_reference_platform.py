"""The reference platform in this repository: valid, realistic, consistent, with deterministic local data."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlspec.app.project import Project
from mlspec.app.validation import ValidationResult
from mlspec.spec import DataSource, Deployment, Environment, FeatureService, FeatureView, TrainingPipeline
from mlspec.spec.deployment import OnlineDeploymentSpec
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from generate_data import generate

ARROW_TYPES = {"int64": pa.int64(), "float32": pa.float32(), "unix_timestamp": pa.timestamp("us", tz="UTC")}


@pytest.fixture(scope="module")
def platform() -> ValidationResult:
    return Project.open(REPO).validate()


def of_kind(result: ValidationResult, cls: type) -> dict[str, object]:
    return {s.name: s.model for s in result.specs if isinstance(s.model, cls)}


def test_reference_platform_is_valid(platform: ValidationResult) -> None:
    assert platform.ok, [str(d.location) + " " + d.message for d in platform.diagnostics]
    assert platform.diagnostics == ()


def test_it_covers_two_models_with_gpu_training_and_two_rollout_styles(platform: ValidationResult) -> None:
    pipelines = of_kind(platform, TrainingPipeline)
    assert len(pipelines) >= 2
    gpu = [p for p in pipelines.values() if p.spec.resources.gpu is not None]  # type: ignore[attr-defined]
    assert gpu and all(p.spec.resources.gpu.fallback == "cpu" for p in gpu)  # type: ignore[attr-defined]
    online = [d.spec for d in of_kind(platform, Deployment).values() if isinstance(d.spec, OnlineDeploymentSpec)]
    strategies = {spec.rollout.strategy for spec in online}
    assert "canary" in strategies and strategies & {"ab", "shadow"}
    classifications = {s.spec.classification for s in of_kind(platform, DataSource).values()}  # type: ignore[attr-defined]
    assert "pii" in classifications


def test_environments_are_local_dev_staging_prod_in_uae_regions(platform: ValidationResult) -> None:
    envs = of_kind(platform, Environment)
    assert set(envs) == {"local", "dev", "staging", "prod"}
    for name in ("dev", "staging", "prod"):
        spec = envs[name].spec  # type: ignore[attr-defined]
        assert spec.region.startswith("uae-") and spec.data_residency.jurisdiction == "AE"
        assert all(r.startswith("uae-") for r in spec.data_residency.allowed_regions)
    assert envs["prod"].spec.tier == "production"  # type: ignore[attr-defined]
    assert envs["prod"].spec.promotion.from_ == "staging"  # type: ignore[attr-defined]


def test_features_exist_in_their_sources_with_the_same_types(platform: ValidationResult) -> None:
    sources = of_kind(platform, DataSource)
    for name, view in of_kind(platform, FeatureView).items():
        source = sources[view.spec.source]  # type: ignore[attr-defined]
        columns = {c.name: c.dtype for c in source.spec.schema_}  # type: ignore[attr-defined]
        for feature in view.spec.features:  # type: ignore[attr-defined]
            assert columns.get(feature.name) == feature.dtype, (name, feature.name)


def test_labels_and_join_keys_exist_in_the_sources(platform: ValidationResult) -> None:
    sources = of_kind(platform, DataSource)
    services = of_kind(platform, FeatureService)
    views = of_kind(platform, FeatureView)
    for pipeline in of_kind(platform, TrainingPipeline).values():
        label = pipeline.spec.label  # type: ignore[attr-defined]
        label_columns = {c.name for c in sources[label.source].spec.schema_}  # type: ignore[attr-defined]
        assert label.field in label_columns
        service = services[pipeline.spec.features]  # type: ignore[attr-defined]
        for selection in service.spec.features:  # type: ignore[attr-defined]
            view = views[selection.view]
            view_columns = {c.name for c in sources[view.spec.source].spec.schema_}  # type: ignore[attr-defined]
            assert view_columns & label_columns, f"{selection.view} cannot be joined to {label.source}"


def test_generated_data_is_deterministic(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", customers=300, days=14)
    second = generate(tmp_path / "b", customers=300, days=14)
    digest = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in first.items()}
    assert digest == {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in second.items()}
    other = generate(tmp_path / "c", customers=300, days=14, seed=1)
    assert digest["fraud-labels"] != hashlib.sha256(other["fraud-labels"].read_bytes()).hexdigest()


def test_generated_data_matches_every_source_schema_and_path(platform: ValidationResult, tmp_path: Path) -> None:
    written = generate(tmp_path / "data", customers=300, days=14)
    sources = of_kind(platform, DataSource)
    assert set(written) == set(sources)
    for name, source in sources.items():
        path = written[name]
        assert source.spec.path == f"data/{path.name}"  # type: ignore[attr-defined]
        schema = pq.read_schema(path)
        declared = [(c.name, ARROW_TYPES[c.dtype]) for c in source.spec.schema_]  # type: ignore[attr-defined]
        assert [(f.name, f.type) for f in schema] == declared, name


def test_labels_depend_on_the_features(tmp_path: Path) -> None:
    written = generate(tmp_path, customers=1000, days=30)
    labels = pq.read_table(written["fraud-labels"]).to_pydict()
    rate = sum(labels["is_fraud"]) / len(labels["is_fraud"])
    assert 0.03 < rate < 0.3, "a learnable but imbalanced fraud rate"
    txn = pq.read_table(written["customer-transactions"]).to_pydict()
    night = dict(zip(zip(txn["customer_id"], txn["event_ts"], strict=True), txn["night_txn_ratio_7d"], strict=True))
    keyed = [night[(c, t)] for c, t in zip(labels["customer_id"], labels["event_ts"], strict=True)]
    fraud_night = [n for n, y in zip(keyed, labels["is_fraud"], strict=True) if y]
    clean_night = [n for n, y in zip(keyed, labels["is_fraud"], strict=True) if not y]
    # Independent labels would give a ratio near 1.0; the generator makes night spending a fraud signal.
    assert sum(fraud_night) / len(fraud_night) > 1.2 * sum(clean_night) / len(clean_night)
