"""Team-scale stores against the real servers `make test` starts: Feast with a SQL registry on PostgreSQL and
Redis / PostgreSQL online stores, MLflow on PostgreSQL (see docs/team-stores.md)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest
import yaml

from mlspec.app.project import Project
from mlspec.render.feast import connection_variables
from mlspec.render.write import write_tree
from mlspec.runtime.context import RuntimeContext
from tests import services
from tests.conftest import REPO, copy_platform, feast_serve

sys.path.insert(0, str(REPO / "scripts"))
from generate_data import generate

FEAST = str(Path(sys.executable).parent / "feast")
END = dt.datetime(2026, 9, 14, tzinfo=dt.UTC)
PROJECTS = {"dev": "uae_bank_ml_dev", "staging": "uae_bank_ml_staging", "prod": "uae_bank_ml_prod"}


def sqlalchemy_url(url: str) -> str:
    """A libpq URL for SQLAlchemy with psycopg 3 (psycopg2 is not installed)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def secret_values(environment: str, registry: str) -> dict[str, str]:
    """What a deployer would set from ``secret://<environment>/feast``, pointed at the test servers."""
    redis = urlparse(services.redis_url())
    postgres = urlparse(registry)
    values = {
        "REGISTRY_URL": sqlalchemy_url(registry),
        "REDIS": f"{redis.hostname}:{redis.port},db={(redis.path or '/0').strip('/') or 0}",
        "PG_HOST": str(postgres.hostname),
        "PG_PORT": str(postgres.port),
        "PG_DATABASE": postgres.path.strip("/"),
        "PG_USER": str(postgres.username),
        "PG_PASSWORD": "trust-auth-ignores-it",
    }
    variables = connection_variables(f"secret://{environment}/feast")
    return {name: values[name.rsplit("_FEAST_", 1)[1]] for name in variables}


def feast(repo: Path, env: dict[str, str], *args: str) -> str:
    """Run the real feast CLI in the rendered repository; returns its stdout."""
    done = subprocess.run([FEAST, *args], cwd=repo, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, f"feast {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """The reference platform with dev and staging (Redis) and prod (switched to the PostgreSQL online store)
    rendered and applied with the feast CLI into ONE registry database; yields the root and the variables."""
    registry = services.fresh_database("feast")
    services.redis_url()
    root = copy_platform(tmp_path_factory.mktemp("team"))
    generate(root / "data", customers=200, days=14)
    for name in PROJECTS:  # a team on shared stores without a cluster: its offline data are this machine's files
        team_environment(root, name)
    prod = root / "environments" / "prod.yaml"
    text = prod.read_text().replace("online: redis", "online: postgres").replace("tls: required", "tls: preferred")
    prod.write_text(text)  # loopback test server has no TLS: tls 'preferred' renders sslmode: prefer
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(root)}
    for name in PROJECTS:
        env |= secret_values(name, registry)
    project = Project.open(root)
    for name in PROJECTS:
        _, result = project.render(name, ["feast"], use_cache=False)
        assert result is not None and result.ok, result and result.diagnostics
        write_tree(root / "rendered" / name, result.artifacts)
        assert "customer_txn_stats" in feast(repo(root, name), env, "apply")
    with pytest.MonkeyPatch.context() as patch:  # FeatureStore() in this process expands the same variables
        for key, value in env.items():
            if key.startswith("MLSPEC_"):
                patch.setenv(key, value)
        yield root, env


def team_environment(root: Path, name: str) -> None:
    """The reference environment without its cluster, its offline data read from the generated files.

    A cluster reads offline data from object storage (the reference overrides point at Azure Blob, and a file
    on disk is refused there); these tests are about the shared registry and online stores, so the sources
    are the local files and the environment runs its pipelines and serving on one machine.
    """
    path = root / "environments" / f"{name}.yaml"
    text = re.sub(
        r"az://uae-bank-ml-\w+-features@uaebankml\w+\.blob\.core\.windows\.net/(\w+\.parquet)",
        lambda m: str(root / "data" / m.group(1)),
        path.read_text(),
    )
    text = re.sub(r"\n    (kubernetes|gitops): .*", "", text)
    path.write_text(
        text.replace("pipelines: kubeflow", "pipelines: local").replace("serving: kserve", "serving: local")
    )


def repo(root: Path, environment: str) -> Path:
    """The environment's rendered Feast repository."""
    return root / "rendered" / environment / "feast"


def test_rendered_team_config_holds_only_placeholders(team: tuple[Path, dict[str, str]]) -> None:
    root, _ = team
    text = (repo(root, "prod") / "feature_store.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["project"] == "uae_bank_ml_prod"
    assert config["registry"]["path"] == "${MLSPEC_SECRET_PROD_FEAST_REGISTRY_URL}"
    assert config["online_store"] == {
        "type": "postgres",
        "host": "${MLSPEC_SECRET_PROD_FEAST_PG_HOST}",
        "port": "${MLSPEC_SECRET_PROD_FEAST_PG_PORT}",
        "database": "${MLSPEC_SECRET_PROD_FEAST_PG_DATABASE}",
        "user": "${MLSPEC_SECRET_PROD_FEAST_PG_USER}",
        "password": "${MLSPEC_SECRET_PROD_FEAST_PG_PASSWORD}",
        "sslmode": "prefer",
    }
    assert "127.0.0.1" not in text and "mlspec@" not in text, "no connection detail is written"


def test_environments_share_one_postgres_registry_without_touching_each_other(
    team: tuple[Path, dict[str, str]],
) -> None:
    import psycopg
    from feast import FeatureStore

    root, env = team  # dev, staging and prod were applied in that order
    feast(repo(root, "dev"), env, "apply")  # applying dev again keeps staging and prod
    registry = env["MLSPEC_SECRET_DEV_FEAST_REGISTRY_URL"].replace("+psycopg", "")
    with psycopg.connect(registry) as connection:
        rows = connection.execute("SELECT project_id, count(*) FROM feature_views GROUP BY project_id").fetchall()
        services_rows = connection.execute("SELECT DISTINCT project_id FROM feature_services").fetchall()
    assert dict(rows) == dict.fromkeys(PROJECTS.values(), 4), "every environment is its own project, all intact"
    assert {r[0] for r in services_rows} == set(PROJECTS.values())
    for name, project in PROJECTS.items():
        store = FeatureStore(repo_path=str(repo(root, name)))
        assert store.project == project
        assert len(store.list_feature_views()) == 4


def _latest(root: Path, customer: str) -> dict[str, Any]:
    """The customer's last row at or before END (what point-in-time materialization serves)."""
    table: list[dict[str, Any]] = pq.read_table(root / "data" / "customer_transactions.parquet").to_pylist()
    rows = [r for r in table if r["customer_id"] == customer and r["event_ts"] <= END]
    latest: dict[str, Any] = max(rows, key=lambda r: r["event_ts"])
    return latest


@pytest.mark.parametrize(("environment", "store_type"), [("dev", "redis"), ("prod", "postgres")])
def test_materialized_features_are_read_back_online(
    team: tuple[Path, dict[str, str]], environment: str, store_type: str
) -> None:
    from feast import FeatureStore

    root, env = team
    path = repo(root, environment)
    start = (END - dt.timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%S")
    feast(path, env, "materialize", start, END.strftime("%Y-%m-%dT%H:%M:%S"), "--views", "customer_txn_stats")
    store = FeatureStore(repo_path=str(path))
    assert store.config.online_store.type == store_type
    table = pq.read_table(root / "data" / "customer_transactions.parquet", columns=["customer_id"])
    customers = sorted(set(table.column("customer_id").to_pylist()))[:5]
    online = store.get_online_features(
        features=["customer_txn_stats:txn_count_7d", "customer_txn_stats:night_txn_ratio_7d"],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()
    for i, customer in enumerate(customers):
        latest = _latest(root, customer)
        assert online["txn_count_7d"][i] == latest["txn_count_7d"], customer
        assert online["night_txn_ratio_7d"][i] == pytest.approx(latest["night_txn_ratio_7d"], rel=1e-6)
    # a model server on the cluster reads them through Feast's feature server on this store: the same values
    served = feature_server_lookup(path, env, {"customer_id": customers})
    direct = store.get_online_features(features=store.get_feature_service("churn_features"),
                                       entity_rows=[{"customer_id": c} for c in customers]).to_dict()  # fmt: skip
    assert served == {name: direct[name] for name in served} and set(served) >= {"txn_count_7d", "customer_id"}
    if store_type == "redis":
        import redis

        client = redis.Redis.from_url(services.redis_url())
        assert any(PROJECTS[environment].encode() in key for key in client.scan_iter(count=1000))
    else:
        import psycopg

        with psycopg.connect(env["MLSPEC_SECRET_PROD_FEAST_REGISTRY_URL"].replace("+psycopg", "")) as connection:
            found = connection.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = %s",
                (f"{PROJECTS[environment]}_customer_txn_stats",),
            ).fetchone()
        assert found == (1,), "the PostgreSQL online store's table is project-scoped"


def test_mlflow_on_postgres_through_a_tracking_uri_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg
    from mlflow import MlflowClient

    from mlspec.spec.environment import RegistryTarget

    database = services.fresh_database("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlalchemy_url(database))
    target = RegistryTarget(tracking_uri="env://MLFLOW_TRACKING_URI")
    assert target.tracking_uri is not None
    launched = RuntimeContext("dev", str(tmp_path), str(tmp_path), str(tmp_path), target.tracking_uri,
                              (tmp_path / "artifacts").as_uri())  # fmt: skip
    ctx = RuntimeContext.from_json(launched.to_json())  # what a step does
    assert ctx.tracking_uri == sqlalchemy_url(database)
    assert "postgresql" not in ctx.to_json() and "postgresql" not in repr(ctx), "the URL never leaves the step"

    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    experiment = client.create_experiment("dev/fraud-training", artifact_location=ctx.artifact_root + "/fraud")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "epochs", "20")
    client.log_metric(run.info.run_id, "auc", 0.91)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    client.log_artifact(run.info.run_id, str(model))
    client.set_terminated(run.info.run_id)
    client.create_registered_model("fraud-detector")
    version = client.create_model_version("fraud-detector", f"runs:/{run.info.run_id}/model.onnx", run.info.run_id)
    client.set_registered_model_alias("fraud-detector", "champion", version.version)
    assert client.get_model_version_by_alias("fraud-detector", "champion").version == version.version
    assert client.get_run(run.info.run_id).data.metrics == {"auc": 0.91}
    assert (tmp_path / "artifacts" / "fraud" / run.info.run_id / "artifacts" / "model.onnx").read_bytes() == b"onnx"

    with psycopg.connect(database) as connection:
        params = connection.execute("SELECT key, value FROM params").fetchall()
        metrics = connection.execute("SELECT key, value FROM metrics").fetchall()
        aliases = connection.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
    assert params == [("epochs", "20")] and metrics == [("auc", 0.91)]
    assert aliases == [("fraud-detector", "champion", int(version.version))]


def test_tracking_uri_references_and_credentials() -> None:
    from mlspec.spec.environment import RegistryTarget

    for uri in ("env://MLFLOW_TRACKING_URI", "secret://prod/mlflow", "https://mlflow.prod.ml.internal"):
        assert RegistryTarget(tracking_uri=uri).tracking_uri == uri
    with pytest.raises(ValueError, match="carries a password"):
        RegistryTarget(tracking_uri="postgresql+psycopg://mlflow:hunter2@db:5432/mlflow")
    ctx = RuntimeContext("prod", "/", "/", "/", "secret://prod/mlflow", "s3://models")
    with pytest.raises(LookupError, match="MLSPEC_SECRET_PROD_MLFLOW"):
        ctx.resolved({})
    assert ctx.resolved({"MLSPEC_SECRET_PROD_MLFLOW": "https://x"}).tracking_uri == "https://x"
    assert RuntimeContext.from_json(ctx.to_json()) == ctx, "unset: left as the reference"


def feature_server_lookup(path: Path, env: dict[str, str], keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """What the model server's lookup gets from ``feast serve`` on the rendered repository ``path``."""
    from mlspec.serving.config import LookupConfig
    from mlspec.serving.feature_lookup import FeatureServerLookup

    with feast_serve(path, env) as url:
        return FeatureServerLookup(LookupConfig("churn_features", ("customer_id",), url=url)).fetch(keys)
