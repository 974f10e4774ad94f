"""Batch Deployments on the real engines: Feast, MLflow on SQLite, the KFP local runner, onnxruntime, PostgreSQL.

One module-scoped project: the reference platform with a generated entity set and
three batch Deployments, applied with --artifacts-only (state and the rendered
pipelines, no engines), then Feast applied and churn-model trained once in process.
The tests build on each other in file order (runs land in the run log and state).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlspec.app.project import Project
from mlspec.cli import main
from mlspec.hashing import canonical
from mlspec.plan.model import Change
from mlspec.render.base import Artifact
from mlspec.runtime import batch as runtime
from mlspec.runtime.context import RuntimeContext
from mlspec.spec.deployment import Deployment
from mlspec.state.model import ResourceState
from mlspec.targets.local.paths import LocalPaths
from tests.conftest import REPO, CliResult, copy_platform
from tests.integration.test_cluster_targets import serve
from tests.integration.test_training import load_spec, run_steps

sys.path.insert(0, str(REPO / "scripts"))
from generate_data import START, generate

pytestmark = pytest.mark.slow
__all__ = ["serve"]  # the fake API server fixture of the cluster target tests

FEATURES = "churn-features"
MISSING_IDS = (999_001, 999_002)  # customers the feature store has never seen
IMPUTED = (100_001, START + dt.timedelta(days=40))  # profile still fresh, transactions past their 7-day TTL
SPECS = """
apiVersion: mlspec/v1
kind: DataSource
metadata: {name: score-customers, owner: retail-analytics, description: Customers to score tonight.}
spec:
  type: file
  path: data/score_customers.parquet
  timestamp_field: event_ts
  region: uae-north
  classification: pii
  encryption: {at_rest: true, kms_key: kms://customer-data}
  schema:
    - {name: customer_id, dtype: int64}
    - {name: event_ts, dtype: unix_timestamp}
---
apiVersion: mlspec/v1
kind: Deployment
metadata: {name: churn-nightly, owner: retail-analytics}
spec:
  mode: batch
  model: {name: churn-model, alias: champion}
  runtime: {cpu: 1, memory: 1Gi}
  batch:
    entities: score-customers
    sink: {path: predictions/churn}
    schedule: "0 2 * * *"
    chunk_size: 50
---
apiVersion: mlspec/v1
kind: Deployment
metadata: {name: churn-hourly, owner: retail-analytics}
spec:
  mode: batch
  model: {name: churn-model, version: 1}
  batch:
    entities: score-customers
    sink: {path: predictions/hourly}
    schedule: "@hourly"
---
apiVersion: mlspec/v1
kind: Deployment
metadata: {name: churn-gpu, owner: retail-analytics}
spec:
  mode: batch
  model: {name: churn-model, version: 1}
  runtime: {device: gpu, gpu: {type: nvidia-l4, count: 1}, fallback: cpu, cpu: 4, memory: 8Gi}
  batch:
    entities: score-customers
    sink: {path: predictions/gpu}
"""


@dataclass
class BatchPlatform:
    root: Path
    paths: LocalPaths
    entities: pd.DataFrame
    plan_text: str

    @property
    def ctx(self) -> RuntimeContext:
        return self.paths.runtime_context()

    def deployment(self, name: str) -> Deployment:
        model = Project.open(self.root).resolve("local").graph.resources[f"Deployment/{name}"].model  # type: ignore[union-attr]
        assert isinstance(model, Deployment)
        return model

    def spec_json(self, name: str, **batch: Any) -> str:
        data = self.deployment(name).model_dump(mode="json", by_alias=True)
        data["spec"]["batch"].update(batch)
        return canonical(data)


def cli_run(*args: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return CliResult(code, out.getvalue(), err.getvalue())


def entity_set() -> pd.DataFrame:
    ids = np.arange(100_001, 100_401, dtype=np.int64)
    rows = [(int(i), START + dt.timedelta(days=21)) for i in ids]
    rows += [IMPUTED] + [(i, START + dt.timedelta(days=21)) for i in MISSING_IDS]
    frame = pd.DataFrame(rows, columns=["customer_id", "event_ts"])
    frame["event_ts"] = pd.to_datetime(frame["event_ts"], utc=True)
    return frame.sample(frac=1.0, random_state=7).reset_index(drop=True)  # the source's order is no sort order


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> BatchPlatform:
    from mlspec.app.paths import local_paths
    from mlspec.targets.local.feature_store import FeatureStoreEngine

    root = copy_platform(tmp_path_factory.mktemp("batch"))
    for name in ("dev", "staging", "prod"):  # the local environment only: no online servers to start or report
        (root / "environments" / f"{name}.yaml").unlink()
    for online in (root / "specs" / "deployments").glob("*.yaml"):
        online.unlink()
    local = root / "environments" / "local.yaml"
    # no online Deployments here: drop their overrides (with their comments)
    local.write_text(
        re.sub(r"(    #[^\n]*\n)*    - target: Deployment/[^\n]*\n      patch: [^\n]*\n", "", local.read_text())
    )
    generate(root / "data", customers=400, days=30)
    entities = entity_set()
    entities.to_parquet(root / "data" / "score_customers.parquet", index=False)
    (root / "specs" / "batch.yaml").write_text(SPECS)
    plan = cli_run("plan", "--env", "local", "-C", str(root))
    assert plan.code == 0, plan.out + plan.err
    applied = cli_run("apply", "--env", "local", "--auto-approve", "--artifacts-only", "-C", str(root))
    assert applied.code == 0, applied.out + applied.err
    project = Project.open(root)
    resolution, result = project.render("local", ["feast"])
    assert resolution.graph is not None and result is not None
    paths = local_paths(project, resolution.graph)
    assert paths.kms_key  # the environment seals models and datasets: scoring decrypts in memory
    FeatureStoreEngine(paths).ensure(FeatureStoreEngine.repo_files({a.path: a for a in result.artifacts}))
    spec = load_spec(root, "churn-model")
    spec["spec"].pop("search")  # one model is all these tests need
    summary = run_steps(spec, paths.runtime_context(), root / "work" / "train")
    assert summary["version"] == "1" and summary["promoted"]
    return BatchPlatform(root, paths, entities, plan.out)


@pytest.fixture(scope="module")
def fetched(platform: BatchPlatform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fetch-entity-features step's output, run in process once for the step-level tests."""
    path = str(tmp_path_factory.mktemp("fetch") / "dataset.parquet")
    rows = runtime.fetch_entity_features(platform.spec_json("churn-nightly"), platform.ctx.to_json(), FEATURES, path)
    assert rows == len(platform.entities)
    return path


# churn-features, read straight from the source files: (file, TTL, fields)
CHURN_VIEWS = (
    ("customer_profile.parquet", "30D", ["tenure_months", "age", "num_products", "balance_aed", "salary_transfer"]),
    ("app_engagement.parquet", "30D", ["sessions_30d", "days_since_login", "support_tickets_90d"]),
    ("customer_transactions.parquet", "7D", ["txn_count_7d", "txn_amount_avg_7d"]),
)


def expected_scores(platform: BatchPlatform) -> pd.DataFrame:
    """Features joined point in time with pandas from the source files, scored by onnxruntime on the registered
    model's bytes: no mlspec (or Feast) code in the way."""
    import hashlib

    import mlflow
    import onnxruntime as ort
    from mlflow import MlflowClient

    from mlspec.crypto import KeyResolver, read_plain

    frame = platform.entities.rename(columns={"event_ts": "event_timestamp"})
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
    frame = frame.reset_index().sort_values("event_timestamp")
    for file, ttl, fields in CHURN_VIEWS:
        source = pd.read_parquet(platform.root / "data" / file)[["customer_id", "event_ts", *fields]]
        source["event_ts"] = pd.to_datetime(source["event_ts"], utc=True).astype("datetime64[ns, UTC]")
        frame = pd.merge_asof(frame, source.sort_values("event_ts"), left_on="event_timestamp", right_on="event_ts",
                              by="customer_id", tolerance=pd.Timedelta(ttl)).drop(columns="event_ts")  # fmt: skip
    frame = frame.sort_values("index").drop(columns="index").reset_index(drop=True)

    uri = platform.ctx.tracking_uri
    version = MlflowClient(uri, uri).get_model_version_by_alias("churn-model", "champion")
    order = json.loads(version.tags["features"])
    mlflow.set_tracking_uri(uri)
    folder = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/churn-model/{version.version}",
                                                 dst_path=str(platform.root / "work" / "expected"))  # fmt: skip
    model = read_plain(Path(folder) / "model.onnx", KeyResolver(platform.root))  # sealed at rest
    assert hashlib.sha256(model).hexdigest() == version.tags["onnx_sha256"]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = frame[order].to_numpy(np.float32, na_value=np.nan)
    known = ~np.isnan(x).all(axis=1)
    scores = np.full(len(x), np.nan, dtype=np.float32)
    scores[known] = session.run(["score"], {"input": x[known]})[0]
    frame["expected"] = scores
    frame["incomplete"] = np.isnan(x).any(axis=1) & known
    frame["version"] = str(version.version)
    return frame


def row_keys(frame: pd.DataFrame, timestamp: str) -> list[tuple[int, str]]:
    """(customer, as-of time) of every row, sorted: equal lists mean the same rows, each as often."""
    return sorted(
        (int(c), pd.Timestamp(t).isoformat()) for c, t in zip(frame["customer_id"], frame[timestamp], strict=True)
    )


def read_sink(folder: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    return ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas()


# --------------------------------------------------------------------------- plan and apply


def test_plan_lists_the_batch_scoring_steps(platform: BatchPlatform) -> None:
    text = platform.plan_text
    assert (
        "Deployment/churn-nightly: run kfp/batch/churn-nightly.yaml with the KFP local runner: "
        "score score-customers with churn-model@champion into parquet predictions/churn"
    ) in text
    assert "Deployment/churn-nightly: then on schedule '0 2 * * *' (UTC) from mlspec monitor" in text
    assert "Deployment/churn-gpu: run kfp/batch/churn-gpu.yaml" in text and "churn-gpu: then on" not in text
    assert "serve churn-model" not in text  # a batch Deployment starts no model server


def test_apply_scores_every_entity_row_once_with_the_registered_model(platform: BatchPlatform) -> None:
    from mlspec.plan.planner import desired_state
    from mlspec.targets.local.platform import LocalPlatformTarget

    project = Project.open(platform.root)
    resolution, result = project.render("local")
    assert resolution.graph is not None and result is not None
    rendered = {a.path: a for a in result.artifacts}
    events: list[str] = []
    target = LocalPlatformTarget(platform.paths, resolution.graph, rendered, {}, events.append)
    ref = "Deployment/churn-nightly"
    artifacts: dict[str, Artifact] = desired_state(resolution.graph, result.artifacts)[ref].artifacts
    assert set(artifacts) == {"kfp/batch/churn-nightly.yaml", "kfp/batch/churn-nightly.schedule.json"}
    change = Change(ref, "create", "safe", artifacts={p: a.sha256 for p, a in artifacts.items()})
    ids = target.apply(change, artifacts, None)

    expected = expected_scores(platform)
    assert ids["model"] == "churn-model" and ids["model_version"] == expected["version"].iloc[0] == "1"
    assert ids["rows"] == str(len(platform.entities)) == "403" and ids["missing_features"] == "2"
    assert ids["sink"] == "parquet predictions/churn" and float(ids["seconds"]) > 0

    sink = platform.paths.data_dir / "predictions" / "churn"
    (run,) = [p.name for p in sink.iterdir()]  # one visible run folder and nothing else
    assert run.startswith("run=") and run.endswith("Z")
    assert len(list((sink / run).glob("part-*.parquet"))) == 9  # 403 rows in chunks of 50
    out = read_sink(sink)
    # every entity row exactly once
    got = row_keys(out, "event_timestamp")
    assert got == row_keys(platform.entities, "event_ts") and len(set(got)) == len(got) == 403
    # the registered model's own predictions on the same features
    out["event_timestamp"] = out["event_timestamp"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    both = out.merge(expected, on=["customer_id", "event_timestamp"], how="inner", validate="1:1")
    assert len(both) == len(out)
    known = both["expected"].notna()
    assert int((~known).sum()) == 2 and set(both.loc[~known, "customer_id"]) == set(MISSING_IDS)
    assert both.loc[~known, "score"].isna().all()  # written, with a null prediction, not dropped
    np.testing.assert_allclose(both.loc[known, "score"], both.loc[known, "expected"], rtol=0, atol=1e-6)
    imputed = both[both["incomplete"]]
    assert imputed["customer_id"].tolist() == [IMPUTED[0]] and imputed["score"].notna().all()
    assert (out["model_name"] == "churn-model").all() and (out["model_version"] == "1").all()
    assert out["scored_at"].nunique() == 1 and out["run_id"].nunique() == 1

    (summary,) = runtime.read_runs(platform.paths.data_dir, "churn-nightly")
    assert summary["rows"] == 403 and summary["scored"] == 401 and summary["chunks"] == 9
    assert summary["missing_features"] == 2 and summary["imputed_rows"] == 1
    assert summary["model_version"] == "1" and summary["device"] == "cpu" and summary["run_id"] == out["run_id"][0]
    assert summary["seconds"] >= summary["scoring_seconds"] > 0 and summary["rows_per_second"] > 0
    assert summary["started_at"] <= summary["scored_at"] <= summary["finished_at"]
    assert pd.Timestamp(summary["scored_at"]) == out["scored_at"][0]
    assert summary["location"] == str(sink / run) and ids["last_run"] == summary["finished_at"]

    state = ResourceState(ref, "fp", {"spec": {"mode": "batch"}}, change.artifacts, ids)
    assert target.healthy(state)
    assert not target.healthy(ResourceState(ref, "fp", {"spec": {"mode": "batch"}}, change.artifacts,
                                            {**ids, "model_version": "7"}))  # fmt: skip
    # applying the same spec again with the same model version is a no-op: no second run
    again = target.apply(change, artifacts, state)
    assert again["run_id"] == ids["run_id"] and len(runtime.read_runs(platform.paths.data_dir, "churn-nightly")) == 1
    assert any("up to date" in e for e in events), events


# --------------------------------------------------------------------------- the steps


def test_chunk_size_does_not_change_a_prediction(platform: BatchPlatform, fetched: str) -> None:
    ctx = platform.ctx.to_json()
    tiny = json.loads(runtime.score(platform.spec_json("churn-nightly", chunk_size=7, sink={"path": "p/tiny"}),
                                    ctx, FEATURES, fetched, "tiny"))  # fmt: skip
    whole = json.loads(runtime.score(platform.spec_json("churn-nightly", chunk_size=1000, sink={"path": "p/whole"}),
                                     ctx, FEATURES, fetched, "whole"))  # fmt: skip
    assert (tiny["chunks"], whole["chunks"]) == (58, 1) and tiny["rows"] == whole["rows"] == 403
    assert len(list(Path(tiny["location"]).glob("part-*.parquet"))) == 58
    a = read_sink(platform.paths.data_dir / "p" / "tiny").sort_values(["customer_id", "event_timestamp"])
    b = read_sink(platform.paths.data_dir / "p" / "whole").sort_values(["customer_id", "event_timestamp"])
    assert a["customer_id"].tolist() == b["customer_id"].tolist()
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=1e-6)
    assert a["score"].isna().sum() == b["score"].isna().sum() == 2


def crash_after_chunks(chunks: int, spec: str, ctx: str, dataset: str, run_id: str) -> None:
    """Run the score step in a child process that is SIGKILLed right after writing ``chunks`` chunks."""
    code = "import sys\nfrom mlspec.runtime.batch import score\nscore(*sys.argv[1:])\n"
    env = {**os.environ, "MLSPEC_FAILPOINTS": f"batch.after_chunk={chunks}"}
    crashed = subprocess.run(
        [sys.executable, "-c", code, spec, ctx, FEATURES, dataset, run_id],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]


def test_a_crash_mid_write_leaves_no_visible_run(platform: BatchPlatform, fetched: str) -> None:
    spec = platform.spec_json("churn-nightly", sink={"path": "p/crash"})
    ctx = platform.ctx.to_json()
    crash_after_chunks(3, spec, ctx, fetched, "crashed")
    sink = platform.paths.data_dir / "p" / "crash"
    (leftover,) = list(sink.iterdir())
    assert leftover.name.startswith(".run=") and len(list(leftover.glob("part-*"))) == 3  # killed after 3 chunks
    assert len(read_sink(sink)) == 0  # readers see no run at all, not 150 of 403 rows
    before = len(runtime.read_runs(platform.paths.data_dir, "churn-nightly"))
    summary = json.loads(runtime.score(spec, ctx, FEATURES, fetched, "after-crash"))
    (run,) = list(sink.iterdir())  # the next run clears the crashed one's parts
    assert run.name.startswith("run=") and len(read_sink(sink)) == summary["rows"] == 403
    assert len(runtime.read_runs(platform.paths.data_dir, "churn-nightly")) == before + 1


def test_table_sink_writes_every_row_to_postgres_in_one_transaction(
    platform: BatchPlatform, fetched: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from tests.services import fresh_database

    url = fresh_database("batch")
    monkeypatch.setenv("MLSPEC_TEST_BATCH_PG", url)
    sink = {"path": None, "table": "ml.churn_scores", "connection": "env://MLSPEC_TEST_BATCH_PG"}
    spec = platform.spec_json("churn-nightly", sink=sink, chunk_size=100)
    ctx = platform.ctx.to_json()
    first = runtime.score(spec, ctx, FEATURES, fetched, "run-a")
    runtime.score(spec, ctx, FEATURES, fetched, "run-a")  # the same run again (a retried step): replaced, not doubled
    runtime.score(spec, ctx, FEATURES, fetched, "run-b")
    summary = json.loads(first)
    assert summary["sink"] == "table ml.churn_scores" and summary["location"] == "ml.churn_scores"
    assert url not in first and url not in (platform.paths.data_dir / "batch/churn-nightly/runs.jsonl").read_text()
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT run_id, count(*), count(DISTINCT (customer_id, event_timestamp)), count(score), "
            "min(model_version), max(model_version), count(DISTINCT scored_at) FROM ml.churn_scores GROUP BY run_id "
            "ORDER BY run_id"
        ).fetchall()
        kinds = dict(connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'churn_scores'"
        ).fetchall())  # fmt: skip
    assert rows == [("run-a", 403, 403, 401, "1", "1", 1), ("run-b", 403, 403, 401, "1", "1", 1)]
    assert kinds["customer_id"] == "bigint" and kinds["score"] == "double precision"
    assert kinds["scored_at"] == kinds["event_timestamp"] == "timestamp with time zone"
    crash_after_chunks(2, spec, ctx, fetched, "run-killed")  # 200 rows copied, then the process dies
    with psycopg.connect(url) as connection:
        counts = connection.execute("SELECT run_id, count(*) FROM ml.churn_scores GROUP BY run_id").fetchall()
    assert sorted(counts) == [("run-a", 403), ("run-b", 403)]  # none of the killed run's rows were committed
    monkeypatch.delenv("MLSPEC_TEST_BATCH_PG")
    with pytest.raises(runtime.BatchError, match="MLSPEC_TEST_BATCH_PG"):
        runtime.score(spec, ctx, FEATURES, fetched, "run-c")


def test_gpu_runtime_renders_gpu_resources_and_reports_its_cpu_fallback(platform: BatchPlatform, fetched: str) -> None:
    from kfp import components

    output = platform.paths.output / "kfp" / "batch"
    for name in ("churn-nightly", "churn-hourly", "churn-gpu"):  # valid KFP IR: kfp loads it back
        assert components.load_component_from_file(str(output / f"{name}.yaml")).name == f"batch-{name}"
    gpu, platform_spec = yaml.safe_load_all((output / "churn-gpu.yaml").read_text())  # the IR, then Kubernetes
    executors = gpu["deploymentSpec"]["executors"]
    resources = executors["exec-score"]["container"]["resources"]
    assert (
        resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        and resources["accelerator"]["resourceCount"] == "1"
    )
    assert resources["cpuLimit"] == 4.0 and resources["memoryLimit"] == pytest.approx(8 * 1.073741824)
    assert "resources" not in executors["exec-fetch-entity-features"]["container"]
    cpu = next(yaml.safe_load_all((output / "churn-nightly.yaml").read_text()))
    assert "accelerator" not in cpu["deploymentSpec"]["executors"]["exec-score"]["container"]["resources"]
    score_config = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-score"]
    assert score_config["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "nvidia-l4"}
    assert score_config["tolerations"][0]["key"] == "nvidia.com/gpu"
    tasks = gpu["root"]["dag"]["tasks"]
    assert tasks["score"]["cachingOptions"] == {} and tasks["fetch-entity-features"]["cachingOptions"] == {}

    import onnxruntime as ort

    summary = json.loads(runtime.score(platform.spec_json("churn-gpu"), platform.ctx.to_json(), FEATURES, fetched))
    assert summary["requested_device"] == "gpu" and summary["rows"] == 403
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert summary["device"] == "gpu", summary
    else:  # the CPU wheel: scored on CPU, and the summary says why
        assert summary["device"] == "cpu" and "CUDAExecutionProvider" in summary["fallback_reason"]


# --------------------------------------------------------------------------- the CLI


def test_mlspec_score_runs_a_batch_deployment_now_and_records_it(platform: BatchPlatform) -> None:
    from mlspec.app.paths import state_store

    root = str(platform.root)
    result = cli_run("score", "churn-nightly", "--env", "local", "-C", root)
    assert result.code == 0, result.out + result.err
    assert "churn-nightly: 403 rows scored with churn-model v1" in result.out and "2 without features" in result.out
    runs = runtime.read_runs(platform.paths.data_dir, "churn-nightly")
    store = state_store(Project.open(platform.root))
    try:
        ids = store.read("local").resources["Deployment/churn-nightly"].target_ids
        record = store.audit("local")[-1].record
    finally:
        store.close()
    assert ids["run_id"] == runs[-1]["run_id"] and ids["rows"] == "403" and ids["model_version"] == "1"
    assert record["type"] == "batch" and record["reason"] == "mlspec score"

    unknown = cli_run("score", "churn-nigthly", "--env", "local", "-C", root)
    assert unknown.code == 2 and "no Deployment named 'churn-nigthly'" in unknown.err
    assert "did you mean 'churn-nightly'?" in unknown.err and "Traceback" not in unknown.err
    online = platform.root / "specs" / "online.yaml"
    online.write_text(
        "apiVersion: mlspec/v1\nkind: Deployment\nmetadata: {name: churn-live, owner: x}\n"
        "spec:\n  mode: online\n  model: {name: churn-model}\n"
    )
    try:
        wrong = cli_run("score", "churn-live", "--env", "local", "-C", root)
    finally:
        online.unlink()
    assert wrong.code == 2 and "is mode: online" in wrong.err and "specs/online.yaml:" in wrong.err
    entities = platform.root / "data" / "score_customers.parquet"
    entities.rename(entities.with_suffix(".moved"))
    try:
        failed = cli_run("score", "churn-gpu", "--env", "local", "-C", root)
    finally:
        entities.with_suffix(".moved").rename(entities)
    assert failed.code == 1, failed.out + failed.err
    assert (
        "error: batch scoring of churn-gpu failed at step 'fetch-entity-features': entity source 'score-customers': "
        f"{entities} does not exist"
    ) in failed.err
    assert "Traceback" not in failed.err


def test_monitor_runs_due_schedules_and_status_shows_every_last_run(platform: BatchPlatform) -> None:
    from mlspec.targets.local.batch import BatchEngine
    from mlspec.targets.local.registry import Registry

    engine = BatchEngine(platform.paths, Registry(platform.ctx.tracking_uri))
    nightly = platform.deployment("churn-nightly")
    last = dt.datetime.fromisoformat(runtime.read_runs(platform.paths.data_dir, "churn-nightly")[-1]["started_at"])
    assert not engine.due(nightly)  # it ran after its last firing
    next_fire = (last + dt.timedelta(days=1)).replace(hour=2, minute=0, second=30)
    assert engine.due(nightly, next_fire) and not engine.due(nightly, last + dt.timedelta(seconds=1))
    assert engine.due(platform.deployment("churn-hourly"))  # never ran: due
    assert not engine.due(platform.deployment("churn-gpu"))  # no schedule: on apply and mlspec score only

    nightly_runs = len(runtime.read_runs(platform.paths.data_dir, "churn-nightly"))
    hour = dt.datetime.now(dt.UTC).hour
    result = cli_run("monitor", "--env", "local", "-C", str(platform.root))
    assert result.code == 0, result.out + result.err
    assert "churn-hourly: scored: scored 403 rows with churn-model v1" in result.out
    assert len(runtime.read_runs(platform.paths.data_dir, "churn-hourly")) == 1
    assert len(runtime.read_runs(platform.paths.data_dir, "churn-nightly")) == nightly_runs  # not due: not run
    again = cli_run("monitor", "--env", "local", "-C", str(platform.root))
    if dt.datetime.now(dt.UTC).hour == hour:  # unless the clock crossed the hour, nothing is due now
        assert len(runtime.read_runs(platform.paths.data_dir, "churn-hourly")) == 1, again.out

    status = cli_run("status", "--env", "local", "-C", str(platform.root))
    assert status.code == 0, status.out + status.err
    assert "batch scoring (KFP local runner):" in status.out
    assert (
        "churn-nightly            score-customers -> parquet predictions/churn, schedule '0 2 * * *' (UTC)"
        in status.out
    )
    assert "403 rows, 2 without features with churn-model v1" in status.out
    data = json.loads(cli_run("status", "--env", "local", "--format", "json", "-C", str(platform.root)).out)
    jobs = {job["deployment"]: job for job in data["batch"]}
    assert set(jobs) == {"churn-nightly", "churn-hourly", "churn-gpu"}
    assert jobs["churn-hourly"]["last_run"]["rows"] == 403 and jobs["churn-gpu"]["schedule"] is None


def test_a_new_champion_is_scored_again_after_training_and_only_once(platform: BatchPlatform) -> None:
    from mlflow import MlflowClient

    from mlspec.targets.local.platform import LocalPlatformTarget

    uri = platform.ctx.tracking_uri
    client = MlflowClient(uri, uri)
    one = client.get_model_version("churn-model", "1")
    # what a training run that beats the champion leaves: a new version (the same model here) with the alias
    two = client.create_model_version("churn-model", one.source, run_id=one.run_id, tags=one.tags)
    client.set_registered_model_alias("churn-model", "champion", two.version)
    resolution = Project.open(platform.root).resolve("local")
    assert resolution.graph is not None
    events: list[str] = []
    target = LocalPlatformTarget(platform.paths, resolution.graph, {}, {}, events.append)
    counts = {
        n: len(runtime.read_runs(platform.paths.data_dir, n)) for n in ("churn-nightly", "churn-hourly", "churn-gpu")
    }
    target._roll_out("churn-model")  # what apply does after a TrainingPipeline registered a version
    nightly = runtime.read_runs(platform.paths.data_dir, "churn-nightly")
    assert len(nightly) == counts["churn-nightly"] + 1 and nightly[-1]["model_version"] == str(two.version) == "2"
    assert set(read_sink(Path(nightly[-1]["location"]))["model_version"]) == {"2"}
    for pinned in ("churn-hourly", "churn-gpu"):  # pinned to version 1: nothing to redo
        runs = runtime.read_runs(platform.paths.data_dir, pinned)
        assert len(runs) == counts[pinned] and runs[-1]["model_version"] == "1"
    assert any("churn-nightly: scored 403 rows with churn-model v2" in e for e in events), events
    target._roll_out("churn-model")  # nothing changed since: no run
    assert len(runtime.read_runs(platform.paths.data_dir, "churn-nightly")) == len(nightly)
    stale = ResourceState("Deployment/churn-nightly", "fp", {"spec": {"mode": "batch"}}, {}, {"model_version": "1"})
    assert not target.healthy(stale)  # state still says v1 until the Deployment is applied again


# --------------------------------------------------------------------------- spec errors


def test_batch_spec_mistakes_are_reported_at_their_line(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = copy_platform(tmp_path)
    head = "apiVersion: mlspec/v1\nkind: Deployment\nmetadata: {{name: {}, owner: x}}\nspec:\n  model: {{name: churn-model}}\n"
    (root / "specs" / "bad.yaml").write_text(
        head.format("no-mode") + "  batch:\n    entities: churn-labels\n    sink: {path: predictions/x}\n---\n"
        + head.format("no-connection") + "  mode: batch\n  batch:\n    entities: churn-labels\n"
        "    sink: {table: ml.scores}\n---\n"
        + head.format("bad-cron") + "  mode: batch\n  batch:\n    entities: churn-labels\n"
        "    sink: {path: p}\n    schedule: '0 25 * * *'\n"
    )  # fmt: skip
    result = cli("validate", str(root))
    assert result.code == 1
    text = result.out + result.err
    assert "specs/bad.yaml:7:5: error[invalid-value]: 'spec.batch': 'batch' is set but mode is 'online'" in text
    assert (
        "specs/bad.yaml:18:19: error[invalid-value]: 'spec.batch.sink.table': a table sink needs a 'connection' "
        "secret reference"
    ) in text
    assert "specs/bad.yaml:29:15: error[invalid-value]: 'spec.batch.schedule': '25' is outside 0-23 in the hour" in text
    assert "✗ 3 error(s)" in text and "Traceback" not in text


# --------------------------------------------------------------------------- a cluster's KFP server

PROD_BATCH = """
---
apiVersion: mlspec/v1
kind: Deployment
metadata: {name: churn-scores, owner: retail-analytics}
spec:
  mode: batch
  model: {name: churn-model, alias: champion}
  runtime: {cpu: 2, memory: 4Gi}
  batch:
    entities: churn-labels
    sink: {table: analytics.ml.churn_scores, connection: "k8s://dwh-writer/url"}
    schedule: "0 4 * * *"
"""


def test_cluster_target_uploads_runs_and_schedules_the_batch_pipeline(tmp_path: Path, serve: Any) -> None:
    import kfp

    from mlspec.plan.planner import desired_state
    from mlspec.runtime.cluster import cluster_context
    from mlspec.targets.cluster.kfp_server import KfpServer
    from mlspec.targets.cluster.platform import ClusterTarget
    from tests.integration.test_cluster_targets import FakeKfp, _strict_model, change, state_of

    root = copy_platform(tmp_path)
    with (root / "specs" / "deployments" / "churn-api.yaml").open("a") as handle:
        handle.write(PROD_BATCH)
    project = Project.open(root)
    resolution, result = project.render("prod", ["kfp"])
    assert resolution.graph is not None and result is not None and result.ok, result and result.diagnostics
    desired = desired_state(resolution.graph, result.artifacts)
    c, artifacts = change(desired, "Deployment/churn-scores")
    assert set(artifacts) == {"kfp/batch/churn-scores.yaml", "kfp/batch/churn-scores.schedule.json"}
    compiled = yaml.safe_load_all(artifacts["kfp/batch/churn-scores.yaml"].content.decode())
    _, platform_spec = list(compiled)
    secrets = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-score"]["secretAsEnv"]
    (secret,) = [s for s in secrets if s["secretName"] == "dwh-writer"]  # the connection's value never enters it
    assert secret["keyToEnv"] == [{"secretKey": "url", "envVar": "MLSPEC_SECRET_DWH_WRITER_URL"}]

    fake = FakeKfp()
    context = cluster_context("prod", "https://mlflow.prod.ml.internal", "s3://uae-bank-ml-prod-models")
    with pytest.warns(FutureWarning):
        client = kfp.Client(host=serve(fake))
    server = KfpServer(client, experiment=f"{project.name}-prod", context=context)
    rendered = {p: a for want in desired.values() for p, a in want.artifacts.items()}
    target = ClusterTarget(tmp_path / "out", resolution.graph, rendered, project=project.name, kfp=server)
    steps = target.plan(c, None)
    assert "upload kfp/batch/churn-scores.yaml as a version of pipeline batch-churn-scores and start a run" in steps
    assert "create or update the recurring run of batch-churn-scores" in steps
    ids = target.apply(c, artifacts, None)
    assert {"pipeline_id", "pipeline_version_id", "run_id", "recurring_run_id"} <= set(ids)
    uploads = [r["upload"] for r in fake.requests if "upload" in r]  # the pipeline, then its version
    assert uploads and set(uploads) == {artifacts["kfp/batch/churn-scores.yaml"].content}
    (run,) = [r["json"] for r in fake.requests if (r["method"], r["path"]) == ("POST", "/runs")]
    _strict_model(run, "V2beta1Run")
    assert RuntimeContext.from_json(run["runtime_config"]["parameters"]["environment"]) == context
    (job,) = [r["json"] for r in fake.requests if (r["method"], r["path"]) == ("POST", "/recurringruns")]
    _strict_model(job, "V2beta1RecurringRun")
    assert job["display_name"] == "batch-churn-scores-prod-schedule"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"
    assert (str(job["max_concurrency"]), job["no_catchup"], job["mode"]) == ("1", True, "ENABLE")
    fake.requests.clear()
    again = target.apply(c, artifacts, state_of(c, ids))  # found by name: only a new run starts
    assert again["recurring_run_id"] == ids["recurring_run_id"]
    assert [r["path"] for r in fake.requests if r["method"] == "POST"] == ["/runs"]
    gone = Change(c.ref, "delete", "breaking")
    assert "delete the recurring run of batch-churn-scores (predictions are kept)" in target.plan(
        gone, state_of(c, ids)
    )
    target.apply(gone, {}, state_of(c, ids))
    assert fake.recurring == {}
