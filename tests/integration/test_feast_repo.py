"""The rendered Feast repository is accepted by the real feast CLI and serves features; spec text cannot inject code."""

from __future__ import annotations

import ast
import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as tc_grpc
import tritonclient.http as tc_http
from tritonclient.utils import InferenceServerException

from mlspec.app.project import Project
from mlspec.render.write import write_tree
from tests.conftest import REPO, copy_platform, feast_serve

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


@pytest.fixture(scope="module")
def feature_server(applied: Path) -> Iterator[str]:
    """Feast's own feature server (``feast serve``) on the applied repository, as a cluster runs it."""
    with feast_serve(applied, {**os.environ, "MLSPEC_PROJECT_ROOT": str(applied.parents[2])}) as url:
        yield url


CUSTOMERS = [800001, 800002]


def test_an_entity_key_is_scored_through_feast_s_feature_server_as_the_client_would(
    applied: Path, feature_server: str, tmp_path: Path
) -> None:
    """The cluster's path: the model server asks the feature server for the FeatureService's features of the
    request's customers and answers exactly as a client that looked them up itself (the SDK on the same store)."""
    import json
    import urllib.error
    import urllib.request

    from mlspec.serving import process
    from mlspec.serving.config import LookupConfig
    from mlspec.serving.feature_lookup import FeastSdkLookup, FeatureServerLookup, LookupFailed, feature_rows
    from tests.online_store import fresh_online_features
    from tests.unit.test_serving import score, url_of, variant

    os.environ.setdefault("MLSPEC_PROJECT_ROOT", str(applied.parents[2]))
    fresh_online_features(applied, "churn_features", CUSTOMERS)
    keys = {"customer_id": [*CUSTOMERS, 123]}
    sdk = FeastSdkLookup(LookupConfig("churn_features", ("customer_id",), repo=str(applied))).fetch(keys)
    http = FeatureServerLookup(LookupConfig("churn_features", ("customer_id",), url=feature_server)).fetch(keys)
    features = sorted(name for name in sdk if name != "customer_id")
    assert {f: sdk[f] for f in features} == {f: http[f] for f in features}, "one answer, either way"
    with pytest.raises(LookupFailed, match=r"row 2 \(customer_id=123\)") as missing:
        feature_rows(http, tuple(features), keys)
    assert missing.value.status == 404
    weight = [0.1 * (i + 1) for i in range(len(features))]
    config = {
        "deployment": "churn-api", "model_name": "churn-model", "host": "127.0.0.1", "port": 0,
        "features": features, "variants": [variant(tmp_path, "stable", "1", weight)],
        "rollout": {"strategy": "direct"}, "log": {"path": str(tmp_path / "r.jsonl"), "sample_rate": 0.0, "enabled": False},
        "lookup": {"feature_service": "churn_features", "entities": ["customer_id"], "url": feature_server},
        "grpc_port": 0,
    }  # fmt: skip
    (tmp_path / "serving.json").write_text(json.dumps(config))
    pid = process.start(tmp_path / "serving.json", tmp_path / "server.log", timeout=60)
    try:
        url = url_of(tmp_path / "server.log") + "/v2/models/churn-api/infer"
        body = {"inputs": [{"name": "customer_id", "shape": [2], "datatype": "INT64", "data": CUSTOMERS}]}
        request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            served = json.loads(reply.read())["outputs"][0]["data"]
        rows = feature_rows(sdk, tuple(features), {"customer_id": CUSTOMERS})
        assert served == pytest.approx([score(weight, [float(v) for v in row]) for row in rows], rel=1e-5)
        body["inputs"][0].update(shape=[1], data=[424242])
        request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 404 and "customer_id=424242" in refused.value.read().decode()
        # Triton's clients send the keys as binary tensor data (HTTP) and raw contents (gRPC): the same answers
        log_text = (tmp_path / "server.log").read_text()
        (grpc_address,) = re.findall(r"grpc listening on (\S+)", log_text)
        ids = np.array(CUSTOMERS, dtype=np.int64)
        for client_module, address in ((tc_http, url_of(tmp_path / "server.log").split("://", 1)[1]),
                                       (tc_grpc, grpc_address)):  # fmt: skip
            client = client_module.InferenceServerClient(address)
            tensor = client_module.InferInput("customer_id", [2], "INT64")
            tensor.set_data_from_numpy(ids)
            answer = client.infer("churn-api", [tensor]).as_numpy("score")
            assert answer.ravel().tolist() == pytest.approx(served, rel=1e-6), client_module.__name__
            unknown = client_module.InferInput("customer_id", [1], "INT64")
            unknown.set_data_from_numpy(np.array([424242], dtype=np.int64))
            with pytest.raises(InferenceServerException, match="customer_id=424242"):
                client.infer("churn-api", [unknown])
    finally:
        process.stop(pid)
