"""The rendered Feast repository is accepted by the real feast CLI and serves features; spec text cannot inject code."""

from __future__ import annotations

import ast
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mlspec.app.project import Project
from mlspec.render.write import write_tree
from tests.conftest import REPO, copy_platform

sys.path.insert(0, str(REPO / "scripts"))
from generate_data import generate

FEAST = str(Path(sys.executable).parent / "feast")


def render_feast(root: Path, env: str = "local") -> Path:
    _, result = Project.open(root).render(env, ["feast"], use_cache=False)
    assert result is not None and result.ok, result and result.diagnostics
    write_tree(root / "rendered" / env, result.artifacts)
    return root / "rendered" / env / "feast"


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_platform(tmp_path_factory.mktemp("platform"))
    generate(root / "data", customers=200, days=14)
    repo = render_feast(root)
    (root / ".mlspec" / "local" / "feast").mkdir(parents=True)
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(root)}
    plan = subprocess.run([FEAST, "plan"], cwd=repo, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "Created feature view customer_txn_stats" in plan.stdout
    apply = subprocess.run(
        [FEAST, "apply"], cwd=repo, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert apply.returncode == 0, apply.stderr[-2000:]
    assert "Created sqlite table uae_bank_ml_local_customer_txn_stats" in apply.stdout
    return repo


def test_feast_apply_registers_every_view_and_service(applied: Path) -> None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(applied))
    assert sorted(v.name for v in store.list_feature_views()) == [
        "app_engagement_features", "customer_profile_features", "customer_txn_stats", "merchant_risk_stats",
    ]  # fmt: skip
    churn = store.get_feature_service("churn_features")
    selected = {p.name: [f.name for f in p.features] for p in churn.feature_view_projections}
    assert selected["customer_txn_stats"] == ["txn_count_7d", "txn_amount_avg_7d"]
    assert store.get_feature_view("customer_txn_stats").ttl == dt.timedelta(days=7)


def test_materialized_features_are_served_online(applied: Path) -> None:
    from feast import FeatureStore

    root = applied.parents[2]
    store = FeatureStore(repo_path=str(applied))
    end = dt.datetime(2026, 9, 14, tzinfo=dt.UTC)
    store.materialize(start_date=end - dt.timedelta(days=14), end_date=end)
    table = pq.read_table(root / "data" / "customer_transactions.parquet").to_pylist()
    customer = table[0]["customer_id"]
    latest = max(
        (r for r in table if r["customer_id"] == customer and r["event_ts"] <= end), key=lambda r: r["event_ts"]
    )
    online = store.get_online_features(
        features=["customer_txn_stats:txn_count_7d", "customer_txn_stats:night_txn_ratio_7d"],
        entity_rows=[{"customer_id": customer}],
    ).to_dict()
    assert online["txn_count_7d"] == [latest["txn_count_7d"]]
    assert online["night_txn_ratio_7d"][0] == pytest.approx(latest["night_txn_ratio_7d"], rel=1e-6)


def test_point_in_time_training_data_through_the_feature_service(applied: Path) -> None:
    from feast import FeatureStore

    root = applied.parents[2]
    store = FeatureStore(repo_path=str(applied))
    labels = pq.read_table(root / "data" / "fraud_labels.parquet").slice(0, 50).to_pandas()
    frame = store.get_historical_features(
        entity_df=labels, features=store.get_feature_service("fraud_features")
    ).to_df()
    assert len(frame) >= 45 and {"txn_count_7d", "merchant_fraud_rate_30d", "is_fraud"} <= set(frame.columns)
    # Point-in-time correct: each row carries the customer's aggregate as of the label's timestamp.
    history = pq.read_table(root / "data" / "customer_transactions.parquet").to_pandas()
    for row in frame.itertuples():
        known = history[(history.customer_id == row.customer_id) & (history.event_ts <= row.event_ts)]
        assert row.txn_count_7d == known.sort_values("event_ts").iloc[-1].txn_count_7d


def test_spec_text_cannot_inject_code_into_the_definitions(tmp_path: Path) -> None:
    root = copy_platform(tmp_path)
    evil = "x'); import os; os.system('echo pwned') #{{ 7*7 }} {% for x in [1] %}loop{% endfor %}\"\"\""
    entities = root / "specs" / "entities.yaml"
    text = entities.read_text().replace(
        "  description: A retail-banking customer (CIF number).", f"  description: |-\n    {evil}"
    )
    entities.write_text(text)
    loaded = Project.open(root).validate()
    assert loaded.ok, loaded.diagnostics
    customer = next(s for s in loaded.specs if s.ref == "Entity/customer")
    assert customer.model.spec.description == evil  # type: ignore[attr-defined]
    repo = render_feast(root)
    source = (repo / "features.py").read_text()
    tree = ast.parse(source)
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "system"
    ]
    assert calls == [], "spec text became code"
    descriptions = [
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Entity"
        for kw in node.keywords
        if kw.arg == "description"
    ]
    assert evil in descriptions, "the text stays exactly as written, template syntax included"
