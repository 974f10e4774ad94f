"""The whole loop on a small copy of the reference platform, with every engine real.

Feast applies and materializes, the KFP local runner trains (features from Feast,
torch, gates, ONNX, MLflow on SQLite), onnxruntime serves over the Open Inference
Protocol, Evidently checks drift. The steps build on each other, in order:
a failed gate, convergence, predictions, a canary that is rolled back because the
challenger breaks its latency threshold, drift that triggers retraining, destroy.
"""

from __future__ import annotations

import io
import json
import os
import signal
import ssl
import stat
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlspec.app.project import Project
from mlspec.crypto import KeyResolver, is_envelope, read_plain
from tests.conftest import REPO, copy_platform, run_mlspec
from tests.online_store import fresh_online_features

sys.path.insert(0, str(REPO / "scripts"))
import contextlib

from generate_data import generate

pytestmark = pytest.mark.slow

LOCAL_OVERRIDES = """
    - target: Deployment/fraud-api
      patch:
        spec:
          rollout: {analysis: {min_requests: 40, max_p99_ms: 0.3}}
          monitoring: {drift: {sample_rate: 1.0}}
          missing_entities: impute
    - target: TrainingPipeline/fraud-detector
      patch: {spec: {evaluation: {gates: {auc: ">= 0.6"}}}}
    - target: TrainingPipeline/churn-model
      patch: {spec: {evaluation: {gates: {auc: ">= 0.999"}}}}
"""
SLOW_MODEL = "architecture: {type: mlp, hidden: [2048, 2048, 2048]}"


def mlspec(root: Path, *args: str, timeout: float = 600) -> Any:
    """Run the CLI as a user would, in the platform's folder."""
    return run_mlspec(*args, "-C", str(root), timeout=timeout)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


# endpoint URL -> the headers that authenticate a call to it (an API key, or a token of the local issuer)
CREDENTIALS: dict[str, dict[str, str]] = {}
# endpoint URL -> the environment's CA its TLS certificate chains to
AUTHORITIES: dict[str, str] = {}


def credentials(url: str) -> dict[str, str]:
    return next((headers for base, headers in CREDENTIALS.items() if url.startswith(base)), {})


def tls(url: str) -> ssl.SSLContext | None:
    ca = next((ca for base, ca in AUTHORITIES.items() if url.startswith(base)), None)
    return ssl.create_default_context(cafile=ca) if ca else None


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **credentials(url)}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=10, context=tls(url)) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def get(url: str, *, authenticated: bool = True) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=credentials(url) if authenticated else {})
    with urllib.request.urlopen(request, timeout=10, context=tls(url)) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def config(root: Path, deployment: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / f".mlspec/local/serving/{deployment}/config.json").read_text())
    return data


def endpoint(root: Path, deployment: str) -> str:
    c = config(root, deployment)
    url = f"{'https' if c.get('tls') else 'http'}://{c['host']}:{c['port']}/v2/models/{deployment}"
    if c.get("tls"):
        AUTHORITIES[url.split("/v2/", maxsplit=1)[0]] = c["tls"]["ca_file"]
    CREDENTIALS[url] = Project.open(root).caller_headers("local", deployment, subject="tests", ttl_seconds=3600)
    return url


def registry(root: Path) -> Any:
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / '.mlspec/local/mlflow/mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def rows(root: Path, model: str, count: int) -> list[list[float]]:
    import pandas as pd

    features = config(root, "fraud-api")["features"]
    sealed = root / f".mlspec/local/datasets/{model}/reference.parquet"
    frame = pd.read_parquet(io.BytesIO(read_plain(sealed, KeyResolver(root))))[features]
    # a random sample of the training rows: served traffic that looks like training traffic
    return frame.sample(count, random_state=count).astype("float32").values.tolist()  # type: ignore[no-any-return]


def send(url: str, batch: list[list[float]], key: int = 0) -> dict[str, Any]:
    body = {
        "inputs": [{"name": "input", "shape": [len(batch), len(batch[0])], "datatype": "FP32", "data": batch}],
        "parameters": {"customer_id": key},
    }
    return post(url + "/infer", body)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = copy_platform(tmp_path_factory.mktemp("platform"))
    generate(root / "data", customers=400, days=30)
    edit(root / "environments/local.yaml", "  overrides:\n", "  overrides:" + LOCAL_OVERRIDES)
    yield root
    mlspec(root, "destroy", "--env", "local", "--auto-approve")
    for folder in (root / ".mlspec/local/serving").glob("*"):  # never leave a server behind, even on failure
        pid_file = folder / "server.pid"
        if pid_file.is_file():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_1_a_failed_gate_stops_promotion_and_names_the_metric(platform: Path) -> None:
    result = mlspec(platform, "apply", "--env", "local", "--auto-approve")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "churn-model: evaluation gate(s) failed" in result.stdout
    assert "auc" in result.stdout and "0.999" in result.stdout and "short by" in result.stdout
    # located where the failed gate's bar is written (here the local environment's override), with what to change
    lines = (platform / "environments/local.yaml").read_text().splitlines()
    gate = next(i for i, line in enumerate(lines) if '{auc: ">= 0.999"}' in line)
    assert f"environments/local.yaml:{gate + 1}:" in result.stdout
    assert "relax the gate" in result.stdout
    assert "Deployment/churn-api: skipped" in result.stdout and "Deployment/churn-batch: skipped" in result.stdout
    # everything that does not depend on the failed pipeline is up
    client = registry(platform)
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert client.search_model_versions("name='churn-model'") == [] or all(
        "champion" not in v.aliases for v in client.search_model_versions("name='churn-model'")
    )
    base = endpoint(platform, "fraud-api").split("/v2/")[0]
    assert base.startswith("https://127.0.0.1:")  # endpoint.tls: served over TLS, by the environment's CA
    assert get(base + "/v2/health/ready", authenticated=False)["ready"] is True
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted without that CA
        urllib.request.urlopen(base + "/v2/health/ready", timeout=10)


def test_2_fixing_the_gate_converges_without_retraining_the_rest(platform: Path) -> None:
    edit(platform / "environments/local.yaml", 'gates: {auc: ">= 0.999"}', 'gates: {auc: ">= 0.55"}')
    result = mlspec(platform, "apply", "--env", "local", "--auto-approve")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = registry(platform)
    assert [str(v.version) for v in client.search_model_versions("name='fraud-detector'")] == ["1"]
    assert str(client.get_model_version_by_alias("churn-model", "champion").version) == "1"
    again = mlspec(platform, "plan", "--env", "local")
    assert again.returncode == 0 and "No changes" in again.stdout, again.stdout[-2000:]
    status = mlspec(platform, "status", "--env", "local", "--format", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    servers = {s["deployment"]: s for s in json.loads(status.stdout)["servers"]}
    assert set(servers) == {"fraud-api", "churn-api"} and all(s["ready"] for s in servers.values())
    # the batch Deployment scored every customer once with the champion; the edge package verifies
    data = json.loads(status.stdout)
    (batch,) = data["batch"]
    assert batch["deployment"] == "churn-batch" and batch["last_run"]["rows"] == 400
    assert str(batch["last_run"]["model_version"]) == "1" and batch["last_run"]["missing_features"] == 0
    (edge,) = data["edge"]
    assert edge["deployment"] == "fraud-edge" and edge["signature_ok"] and edge["quantized"] == "true"
    assert str(edge["model_version"]) == "1" and int(edge["size_bytes"]) < int(edge["source_bytes"])


def test_3_served_predictions_equal_the_registered_onnx_model(platform: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    batch = rows(platform, "fraud-detector", 5)
    answer = send(endpoint(platform, "fraud-api"), batch)
    assert answer["model_version"] == "1" and answer["parameters"]["variant"] == "stable"
    served = np.array(answer["outputs"][0]["data"], dtype=np.float32)
    variant = config(platform, "fraud-api")["variants"][0]
    # the registered model is sealed at rest with the environment's key: the bytes on disk are not ONNX
    assert is_envelope(Path(variant["path"]).read_bytes())
    plain = read_plain(variant["path"], KeyResolver(platform))
    session = ort.InferenceSession(plain, providers=["CPUExecutionProvider"])
    local = session.run(None, {"input": np.array(batch, dtype=np.float32)})[0].reshape(-1)
    np.testing.assert_allclose(served, local, atol=1e-6)
    assert ((served > 0) & (served < 1)).all()  # binary classifier: probabilities
    # so are the pipeline's step outputs: the joined features (customers' data) and the checkpoints
    steps = [f for f in (platform / ".mlspec/local/kfp").rglob("*") if f.is_file() and f.name in {"dataset", "model"}]
    assert {f.name for f in steps} == {"dataset", "model"}
    assert all(is_envelope(f.read_bytes()) for f in steps), [str(f) for f in steps if not is_envelope(f.read_bytes())]
    reference = platform / ".mlspec/local/datasets/fraud-detector/reference.parquet"
    assert is_envelope(reference.read_bytes()) and len(read_plain(reference, KeyResolver(platform))) > 0


def test_3b_the_endpoints_refuse_callers_without_credentials(platform: Path) -> None:
    import urllib.error

    batch = rows(platform, "fraud-detector", 1)
    body = {"inputs": [{"name": "input", "shape": [1, len(batch[0])], "datatype": "FP32", "data": batch}]}

    def status_of(url: str, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=tls(url)) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    fraud = endpoint(platform, "fraud-api") + "/infer"  # oidc: tokens of the environment's local issuer
    assert status_of(fraud, {}) == 401
    assert status_of(fraud, {"Authorization": "Bearer not-a-token"}) == 401
    token = mlspec(platform, "token", "fraud-api", "--env", "local", "--subject", "payments")
    assert token.returncode == 0 and token.stdout.startswith("Authorization: Bearer "), token.stdout + token.stderr
    name, value = token.stdout.strip().split(": ", 1)
    assert status_of(fraud, {name: value}) == 200
    # a token of the same issuer for another audience is valid, but not for this endpoint
    from mlspec.app.paths import local_paths
    from mlspec.targets.local.endpoint_auth import mint_token

    project = Project.open(platform)
    graph = project.resolve("local").graph
    assert graph is not None
    wrong = mint_token(local_paths(project, graph), "core-banking", "someone", 60)
    assert status_of(fraud, {"Authorization": f"Bearer {wrong}"}) == 403
    churn = endpoint(platform, "churn-api") + "/infer"  # api_key (the local override): a key mlspec made, 0600
    assert status_of(churn, {}) == 401 and status_of(churn, {"X-API-Key": "guess"}) == 401
    key_file = platform / ".mlspec/local/auth/churn-api.api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = mlspec(platform, "token", "churn-api", "--env", "local").stdout.strip()
    assert key == f"X-API-Key: {key_file.read_text().strip()}"


def test_3c_an_entity_key_is_scored_with_the_features_the_online_store_holds(platform: Path) -> None:
    """A caller sends customer ids; the server fetches the FeatureService's features from the online store and
    answers exactly as when the caller looked them up itself and sent them in the model's order."""
    from feast import FeatureStore

    from mlspec.app.paths import local_paths

    project = Project.open(platform)
    graph = project.resolve("local").graph
    assert graph is not None
    repo = local_paths(project, graph).feature_repo
    assert config(platform, "churn-api")["lookup"] == {
        "feature_service": "churn_features", "entities": ["customer_id"], "repo": str(repo), "missing": "error",
    }  # fmt: skip
    customers = [900001, 900002, 900003]
    fresh_online_features(repo, "churn_features", customers)
    url = endpoint(platform, "churn-api") + "/infer"
    keyed = post(url, {"inputs": [{"name": "customer_id", "shape": [3], "datatype": "INT64", "data": customers}],
                       "parameters": {"customer_id": 7}})  # fmt: skip
    store = FeatureStore(repo_path=str(repo))
    found = store.get_online_features(
        features=store.get_feature_service("churn_features"), entity_rows=[{"customer_id": c} for c in customers]
    ).to_dict()
    features = config(platform, "churn-api")["features"]
    batch = [[float(found[f][i]) for f in features] for i in range(len(customers))]
    client_side = post(url, {"inputs": [{"name": "input", "shape": [3, len(features)], "datatype": "FP32",
                                         "data": batch}], "parameters": {"customer_id": 7}})  # fmt: skip
    assert keyed["model_version"] == client_side["model_version"]
    assert keyed["outputs"][0]["data"] == pytest.approx(client_side["outputs"][0]["data"], abs=1e-6)
    # an entity the store does not hold is never guessed: the request says which row and key, nothing is scored
    with pytest.raises(urllib.error.HTTPError) as missing:
        post(url, {"inputs": [{"name": "customer_id", "shape": [2], "datatype": "INT64", "data": [900001, 424242]}]})
    assert missing.value.code == 404
    assert "row 1 (customer_id=424242)" in json.loads(missing.value.read())["error"]
    # keys and features are not mixed in one request
    with pytest.raises(urllib.error.HTTPError) as mixed:
        post(url, {"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [900001]},
                              {"name": "input", "shape": [1, len(features)], "datatype": "FP32",
                               "data": [batch[0]]}]})  # fmt: skip
    assert mixed.value.code == 400 and "exactly the join keys customer_id" in mixed.value.read().decode()
    # fraud-api says missing_entities: impute: unknown entities are scored with the training means, which is how the
    # registered model fills any missing value (the same answer as NaN sent to the model itself)
    import numpy as np
    import onnxruntime as ort

    fraud = config(platform, "fraud-api")
    assert fraud["lookup"]["missing"] == "impute"
    keys = fraud["lookup"]["entities"]
    inputs = [{"name": key, "shape": [1], "datatype": "INT64", "data": [424242]} for key in keys]
    answer = post(endpoint(platform, "fraud-api") + "/infer", {"inputs": inputs})
    plain = read_plain(fraud["variants"][0]["path"], KeyResolver(platform))
    session = ort.InferenceSession(plain, providers=["CPUExecutionProvider"])
    empty = np.full((1, len(fraud["features"])), np.nan, dtype=np.float32)
    assert answer["outputs"][0]["data"] == pytest.approx(session.run(None, {"input": empty})[0].reshape(-1).tolist())


def test_4_a_canary_that_breaks_its_latency_threshold_is_rolled_back(platform: Path) -> None:
    spec = platform / "specs/training/fraud-detector.yaml"
    edit(spec, "architecture: {type: mlp, hidden: [64, 32], dropout: 0.1}", SLOW_MODEL)
    edit(spec, "epochs: 20", "epochs: 2")
    # a 2-epoch model is worse offline, and a worse challenger is never rolled out (test_training checks that):
    # the spec allows it here, so that the canary is judged on its latency
    edit(spec, "compare_to: champion", "compare_to: none")
    result = mlspec(platform, "apply", "--env", "local", "--auto-approve")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = registry(platform)
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("fraud-detector", "challenger").version) == "2"
    variants = {v["name"]: v["version"] for v in config(platform, "fraud-api")["variants"]}
    assert variants == {"stable": "1", "canary": "2"}
    url = endpoint(platform, "fraud-api")
    traffic = rows(platform, "fraud-detector", 800)
    seen = {send(url, [row], key=i)["model_version"] for i, row in enumerate(traffic)}
    assert seen == {"1", "2"}  # the canary got its first step's share before it was judged
    rollout = get(url + "/rollout")
    assert rollout["phase"] == "rolled_back" and "p99" in rollout["reason"], rollout
    status = mlspec(platform, "status", "--env", "local")
    assert "fraud-detector v2 rolled back" in status.stdout, status.stdout
    assert client.get_model_version("fraud-detector", "2").tags.get("mlspec.rollout") == "rolled_back"
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"
    assert [v["version"] for v in config(platform, "fraud-api")["variants"]] == ["1"]
    assert {send(url, [row], key=i)["model_version"] for i, row in enumerate(traffic[:50])} == {"1"}
    live = mlspec(platform, "audit", "live", "--env", "local")  # what served when: the settled rollout is recorded
    assert "Deployment/fraud-api served fraud-detector@champion (stable=1)" in live.stdout, live.stdout
    # the rollback was the canary analysis's decision; the person who ran status only observed it
    settled = next(line for line in mlspec(platform, "audit", "log").stdout.splitlines() if "rolled back" in line)
    assert " rollout by mlspec-rollout (observed by " in settled, settled


def test_5_drift_in_served_traffic_triggers_retraining_and_a_new_rollout(platform: Path) -> None:
    url = endpoint(platform, "fraud-api")
    features = config(platform, "fraud-api")["features"]
    normal = rows(platform, "fraud-detector", 400)
    for i, row in enumerate(normal):
        send(url, [row], key=i)
    quiet = mlspec(platform, "monitor", "--env", "local")
    assert quiet.returncode == 0, quiet.stdout[-3000:] + quiet.stderr[-3000:]
    assert "fraud-api: ok: no drift" in quiet.stdout
    # the logged requests (customers' features) are sealed at rest: monitor read them with the environment's key
    logged = (platform / ".mlspec/local/requests/fraud-api/requests.jsonl").read_bytes()
    assert logged.startswith(b'{"sealed":') and features[0].encode() not in logged
    shifted_columns = [i for i, name in enumerate(features) if name.startswith("txn_amount")]
    assert shifted_columns
    for i, row in enumerate(normal):
        send(url, [[v * 5 if c in shifted_columns else v for c, v in enumerate(row)]], key=i)
    drift = mlspec(platform, "monitor", "--env", "local")
    assert drift.returncode == 1, drift.stdout[-3000:] + drift.stderr[-3000:]
    assert "fraud-api: drift: drift in" in drift.stdout and "txn_amount" in drift.stdout
    assert "retrained fraud-detector v3" in drift.stdout
    report = platform / ".mlspec/local/monitoring/fraud-api-drift.html"
    assert report.is_file() and "drawDashboard" in report.read_text()
    summary = json.loads((platform / ".mlspec/local/monitoring/fraud-api-drift.json").read_text())
    drifted = {f["feature"] for f in summary["features"] if f["drifted"]}
    assert drifted and drifted <= {features[c] for c in shifted_columns}
    client = registry(platform)
    assert str(client.get_model_version_by_alias("fraud-detector", "challenger").version) == "3"
    variants = {v["name"]: v["version"] for v in config(platform, "fraud-api")["variants"]}
    assert variants == {"stable": "1", "canary": "3"}  # the retrained model goes through the rollout again
    live = mlspec(platform, "audit", "live", "--env", "local")
    assert "Deployment/fraud-api served fraud-detector@champion (stable=1,canary=3)" in live.stdout, live.stdout
    log = mlspec(platform, "audit", "log", "--env", "local").stdout
    assert "retrain" in log and "TrainingPipeline/fraud-detector (drift) -> v3" in log, log[-2000:]
    assert "fraud-api: drift, action retrain" in log


def test_5b_customer_data_keys_and_state_are_their_owners_only(platform: Path) -> None:
    """After applies, a canary, monitoring and retraining: every file of the local platform (the Feast stores,
    predictions, request logs, models, MLflow's database, keys) is 0600 and every folder 0700, and so is state."""
    data = platform / ".mlspec" / "local"
    assert any((data / "serving").rglob("*")) and any((data / "feast").rglob("*")), "the platform wrote its stores"
    loose = [
        f"{path.relative_to(platform)} {stat.S_IMODE(path.stat().st_mode):o}"
        for path in [data, *data.rglob("*")]
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert loose == []
    for state in (platform / ".mlspec").glob("state.db*"):
        assert stat.S_IMODE(state.stat().st_mode) == 0o600, state


def test_5c_a_registered_model_file_altered_on_disk_is_in_the_very_next_plan(platform: Path) -> None:
    """No --refresh needed: every local plan re-reads each registered model file state recorded and plans its
    pipeline again when the bytes are not the ones it registered (the apply retrains a new, verified version)."""
    from mlspec.app.paths import state_store

    project = Project.open(platform)
    store = state_store(project)
    try:
        resources = store.read("local").resources
    finally:
        store.close()
    ids = resources["TrainingPipeline/fraud-detector"].target_ids
    model_file = Path(ids["onnx_path"])
    original = model_file.read_bytes()
    assert mlspec(platform, "plan", "--env", "local").stdout.count("drift:") == 0
    model_file.chmod(0o600)
    model_file.write_bytes(original[:-16] + bytes(16))  # the last bytes replaced: a sealed file no longer opens
    try:
        planned = mlspec(platform, "plan", "--env", "local")
        assert "TrainingPipeline/fraud-detector" in planned.stdout and "drift: fraud-detector v" in planned.stdout
        assert str(model_file) in planned.stdout, planned.stdout[-3000:]
        model_file.unlink()
        gone = mlspec(platform, "plan", "--env", "local").stdout
        assert "its registered model file" in gone and " is gone" in gone, gone[-3000:]
    finally:
        model_file.write_bytes(original)
    assert "drift:" not in mlspec(platform, "plan", "--env", "local").stdout, "restored: nothing to do"


def test_6_destroy_stops_every_server_and_empties_state(platform: Path) -> None:
    pids = [int(p.read_text()) for p in (platform / ".mlspec/local/serving").glob("*/server.pid")]
    assert len(pids) == 2
    result = mlspec(platform, "destroy", "--env", "local", "--auto-approve")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    listing = mlspec(platform, "state", "list", "--env", "local")
    assert "Deployment/" not in listing.stdout and "TrainingPipeline/" not in listing.stdout
    # registered models are history, not configuration: destroy keeps them
    assert str(registry(platform).get_model_version_by_alias("fraud-detector", "champion").version) == "1"
