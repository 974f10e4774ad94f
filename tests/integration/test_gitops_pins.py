"""The GitOps hand-off pins every InferenceService to an exact model version, against a real MLflow server.

`mlspec render --pin` is what the apply jobs and the scheduled pin workflow commit for Argo CD: each served
alias is resolved in the environment's registry, so git records which version (storageUri, sha256) runs where.
A model nothing has trained yet leaves its InferenceServices out; any other registry problem writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlspec.cli import main
from mlspec.runtime.object_store import kserve_storage_uri
from tests.conftest import FIXTURES, copy_platform
from tests.k8s_schemas import validate_crd

ISVC_CRD = str(FIXTURES / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml")
STORE = "azure://uaebankmlprod/models"  # environments/prod.yaml's artifact store


def objects(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object under ``folder/kubernetes`` by (kind, name)."""
    found = {}
    for path in sorted((folder / "kubernetes").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if obj:
                found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def assert_manifest_lists_the_files(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest["artifacts"]:
        content = (folder / entry["path"]).read_bytes()
        assert hashlib.sha256(content).hexdigest() == entry["sha256"], entry["path"]
    listed = {e["path"] for e in manifest["artifacts"]}
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk


def publish(client: Any, model: str, content: bytes) -> str:
    """Register a version as the register step does (its sha256 and store folder as tags); returns its number."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # registered by an earlier version
        client.create_registered_model(model)
    run = client.create_run("0").info.run_id  # a version comes from a training run, as the register step's does
    version = client.create_model_version(model, source=f"runs:/{run}/model", run_id=run)
    number = str(version.version)
    client.set_model_version_tag(model, number, "onnx_sha256", hashlib.sha256(content).hexdigest())
    client.set_model_version_tag(model, number, "mlspec.storage_uri", kserve_storage_uri(STORE, model, number))
    return number


@pytest.fixture
def prod_repo(tmp_path: Path, mlflow_server: str) -> Path:
    """The reference platform whose prod registry is the real MLflow server (fresh per module)."""
    (tmp_path / "repo").mkdir()
    root = copy_platform(tmp_path / "repo")
    env = root / "environments" / "prod.yaml"
    env.write_text(env.read_text(encoding="utf-8").replace("https://mlflow.prod.ml.internal", mlflow_server))
    return root


def render_pinned(root: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["render", "--env", "prod", "--pin", "-o", str(out), "-C", str(root)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_handoff_pins_each_alias_to_its_version_and_waits_for_the_first_one(
    prod_repo: Path, mlflow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    out = tmp_path / "handoff"
    # nothing trained in prod yet: the InferenceServices wait, everything else is handed off
    code, text = render_pinned(prod_repo, out, capsys)
    assert code == 0, text
    assert "model-not-trained-yet" in text and "InferenceService 'fraud-api' is left out" in text
    first = objects(out / "prod")
    assert not [k for k in first if k[0] == "InferenceService"]
    assert ("AuthorizationPolicy", "fraud-api") in first and ("ServingRuntime", "mlspec") in first
    assert_manifest_lists_the_files(out / "prod")

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    fraud_v1 = publish(client, "fraud-detector", b"fraud v1")
    client.set_registered_model_alias("fraud-detector", "champion", fraud_v1)
    churn_v1, churn_v2 = publish(client, "churn-model", b"churn v1"), publish(client, "churn-model", b"churn v2")
    client.set_registered_model_alias("churn-model", "champion", churn_v1)
    client.set_registered_model_alias("churn-model", "challenger", churn_v2)

    code, text = render_pinned(prod_repo, out, capsys)
    assert code == 0 and "model-not-trained-yet" not in text, text
    pinned = objects(out / "prod")
    fraud = pinned[("InferenceService", "fraud-api")]
    served = fraud["spec"]["predictor"]["model"]
    assert served["storageUri"] == kserve_storage_uri(STORE, "fraud-detector", fraud_v1)
    digest = hashlib.sha256(b"fraud v1").hexdigest()
    assert fraud["metadata"]["annotations"]["mlspec.dev/model-sha256"] == digest
    assert fraud["metadata"]["annotations"]["mlspec.dev/model-version"] == fraud_v1
    assert {"name": "MLSPEC_MODEL_SHA256", "value": digest} in served["env"]
    assert fraud["spec"]["predictor"]["canaryTrafficPercent"] == 10, "a new pin starts the canary at step one"
    # A/B: one InferenceService downloads both variants; its runtime routes between them with their pins
    churn = pinned[("InferenceService", "churn-api")]["spec"]["predictor"]
    assert churn["storageUris"] == [
        {"uri": kserve_storage_uri(STORE, "churn-model", churn_v1), "mountPath": "/mnt/models/champion"},
        {"uri": kserve_storage_uri(STORE, "churn-model", churn_v2), "mountPath": "/mnt/models/challenger"},
    ]
    churn_env = {e["name"]: e.get("value") for e in churn["model"]["env"]}
    assert json.loads(churn_env["MLSPEC_VARIANTS"]) == [
        {"alias": "champion", "name": "champion", "sha256": hashlib.sha256(b"churn v1").hexdigest(), "version": churn_v1},
        {"alias": "challenger", "name": "challenger", "sha256": hashlib.sha256(b"churn v2").hexdigest(),
         "version": churn_v2},
    ]  # fmt: skip
    assert "storageUri" not in churn["model"] and "MLSPEC_MODEL_SHA256" not in churn_env
    for key, obj in pinned.items():
        if key[0] == "InferenceService":
            assert validate_crd(obj, ISVC_CRD) == [], key
    assert_manifest_lists_the_files(out / "prod")

    # training moves @champion: only the file holding fraud-api's InferenceService changes (one commit, one canary)
    before = {p: p.read_bytes() for p in (out / "prod").rglob("*") if p.is_file()}
    fraud_v2 = publish(client, "fraud-detector", b"fraud v2")
    client.set_registered_model_alias("fraud-detector", "champion", fraud_v2)
    code, text = render_pinned(prod_repo, out, capsys)
    assert code == 0, text
    changed = {str(p.relative_to(out / "prod")) for p, content in before.items() if p.read_bytes() != content}
    assert changed == {"kubernetes/fraud-api.yaml", "manifest.json"}
    moved = objects(out / "prod")[("InferenceService", "fraud-api")]["spec"]["predictor"]["model"]
    assert moved["storageUri"] == kserve_storage_uri(STORE, "fraud-detector", fraud_v2)
    assert_manifest_lists_the_files(out / "prod")


def test_a_missing_alias_or_an_unpublished_version_writes_nothing(
    prod_repo: Path, mlflow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    out = tmp_path / "handoff"
    for model in ("fraud-detector", "churn-model"):  # the module's server may hold versions from the test above
        client.set_registered_model_alias(model, "champion", publish(client, model, model.encode()))
    client.set_registered_model_alias("churn-model", "challenger", publish(client, "churn-model", b"c"))
    assert render_pinned(prod_repo, out, capsys)[0] == 0
    handed_off = {p: p.read_bytes() for p in (out / "prod").rglob("*") if p.is_file()}

    # versions exist but @challenger points nowhere: an error at the Deployment, and the last hand-off stays
    client.delete_registered_model_alias("churn-model", "challenger")
    code, text = render_pinned(prod_repo, out, capsys)
    assert code == 1
    assert "unpinnable-model" in text and "InferenceService 'churn-api'" in text and "churn-model@challenger" in text
    assert "specs/" in text  # located at the Deployment's spec
    assert {p: p.read_bytes() for p in handed_off} == handed_off

    # a version the register step never published to this environment's store is never served
    client.set_registered_model_alias("churn-model", "challenger", publish(client, "churn-model", b"d"))
    run = client.create_run("0").info.run_id
    unpublished = client.create_model_version("fraud-detector", source=f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("fraud-detector", "champion", str(unpublished.version))
    code, text = render_pinned(prod_repo, out, capsys)
    assert code == 1 and "was never published to the artifact store" in text, text
    assert {p: p.read_bytes() for p in handed_off} == handed_off


def test_an_unreachable_registry_fails_the_handoff_once_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    (tmp_path / "repo").mkdir()
    root = copy_platform(tmp_path / "repo")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = root / "environments" / "prod.yaml"
    env.write_text(env.read_text(encoding="utf-8").replace("https://mlflow.prod.ml.internal", closed))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    code, text = render_pinned(root, tmp_path / "handoff", capsys)
    assert code == 1 and "unpinnable-model" in text
    assert text.count("did not answer") == 2 and "Connection refused" in text, text  # one error per InferenceService
    assert not (tmp_path / "handoff").exists()
