"""Registered models in object storage: written by the register step to Azurite and an S3 server, refused a
second time, fetched by KServe's own storage code from the rendered and pinned ``storageUri``, digest checked.

Azurite serves HTTPS with a test certificate for ``*.blob.core.windows.net``; this module maps that name
to Azurite's port on 127.0.0.1 (here, and in the KServe download process), so every client uses the
production URL form. Both servers are started by scripts/test_services.py (`make test`).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from mlspec.app.project import Project
from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.object_store import (
    AlreadyPublished,
    StoreLocation,
    mlflow_artifact_root,
    open_store,
    version_folder,
)
from mlspec.targets.base import TargetError
from mlspec.targets.cluster.model_pins import ServedVersion, pin_model_versions
from tests.conftest import FIXTURES, REPO, run_mlspec
from tests.integration.test_lifecycle import edit, make_project
from tests.k8s_schemas import validate_crd
from tests.services import azurite, s3_url

ISVC_CRD = str(FIXTURES / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml")
BLOB_SUFFIX = ".blob.core.windows.net"

# Installed in the KServe download process before it runs: the storage account's name resolves to Azurite.
DOWNLOAD = """
import socket, sys
real = socket.getaddrinfo
def local(host, port, *args, **kwargs):
    if isinstance(host, str) and host.endswith("{suffix}"):
        return real("127.0.0.1", {port}, *args, **kwargs)
    return real(host, port, *args, **kwargs)
socket.getaddrinfo = local
from kserve_storage import Storage
Storage.download(sys.argv[1], sys.argv[2])
"""


def tiny_onnx() -> bytes:
    """A real ONNX model (y = x) to store."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["score"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 3])],
    )
    return bytes(onnx.helper.make_model(graph).SerializeToString())


def trained_model(tmp_path: Path) -> tuple[Any, Any]:
    """What registration gets from the earlier steps (the ONNX bytes, their digest) and the environment's key."""
    from mlspec.crypto.keys import KeyResolver
    from mlspec.runtime.registry import TrainedModel

    keys = KeyResolver(tmp_path, create=True)
    kek = keys.resolve("file://keys/prod.key")
    data = tiny_onnx()
    saved = {"features": ["amount", "hour", "merchant_risk"]}  # the train step's record of the input order
    trained = TrainedModel(b"", saved, data, hashlib.sha256(data).hexdigest(), {}, kek)
    return trained, keys


def context(tmp_path: Path, store: str, credentials: str = "") -> RuntimeContext:
    """A cluster step's context whose environment publishes to ``store``."""
    return RuntimeContext(
        environment="prod", project_root=str(tmp_path), data_dir=str(tmp_path / "data"),
        feature_repo=str(tmp_path / "repo"), tracking_uri="", artifact_root="",
        kms_key="file://keys/prod.key", model_store=store, model_store_credentials=credentials,
    )  # fmt: skip


def rendered_isvc(tmp_path: Path, store: str, version: int | None = None) -> dict[str, Any]:
    """The InferenceService `mlspec render` writes for a prod environment whose artifact store is ``store``."""
    root = make_project(tmp_path / "repo")
    new_store = f'{{uri: "{store}", region: uae-north}}'
    edit(root, "environments/prod.yaml", '{uri: "s3://models-prod", region: uae-north}', new_store)
    if version is not None:
        pinned = f"model: {{name: fraud-detector, version: {version}}}"
        edit(root, "specs/all.yaml", "model: {name: fraud-detector}", pinned)
    project = Project.open(root)
    resolution = project.resolve("prod")
    _, result = project.render("prod", ["kubernetes"], resolution)
    assert result is not None and result.ok
    import yaml

    content = next(a.content for a in result.artifacts if a.path == "kubernetes/fraud-api.yaml")
    return next(d for d in yaml.safe_load_all(content) if d and d["kind"] == "InferenceService")


class Registry:
    """The registry as the register step leaves it: the alias at the published version, with its tags."""

    def __init__(self, version: str, sha256: str, storage_uri: str) -> None:
        self.found = ServedVersion(version, sha256, storage_uri)

    def served_version(self, model: str, *, alias: str | None = None, version: str | None = None) -> ServedVersion:
        assert model == "fraud-detector" and (alias == "champion" or version == self.found.version)
        return self.found


def publish_serve_and_fetch(
    tmp_path: Path, store: str, credentials: str, download_env: dict[str, str], port: int = 0
) -> None:
    """The whole path: register step -> store; render -> pin -> storageUri; KServe download -> digest."""
    from mlspec.crypto import decrypt
    from mlspec.runtime.registry import publish_to_store

    trained, keys = trained_model(tmp_path)
    ctx = context(tmp_path, store, credentials)
    version = str(uuid.uuid4().int % 10_000 + 1)  # the servers live for the whole run: a fresh version number
    published = publish_to_store(ctx, trained, "fraud-detector", version, "run-1")
    assert published is not None and published.sha256 == trained.sha256
    assert (
        published.manifest["sealed"] is True and published.manifest["encryption"]["key_ref"] == "file://keys/prod.key"
    )
    assert published.manifest["features"] == ["amount", "hour", "merchant_risk"]  # what the serving runtime takes
    with pytest.raises(AlreadyPublished):  # immutable: the same version is never written twice
        publish_to_store(ctx, trained, "fraud-detector", version, "run-2")
    model_key = StoreLocation.parse(store).key(version_folder("fraud-detector", version), "model.onnx")
    with pytest.raises(AlreadyPublished):  # not even one file of it: the store's own conditional write refuses
        open_store(store, credentials or None).create(model_key, b"not the model")

    isvc = rendered_isvc(tmp_path, store)
    assert "storageUri" not in isvc["spec"]["predictor"]["model"], "an alias is resolved when applied"
    (pinned,) = pin_model_versions([isvc], Registry(version, trained.sha256, published.storage_uri))
    assert validate_crd(pinned, ISVC_CRD) == []
    uri = pinned["spec"]["predictor"]["model"]["storageUri"]
    assert uri == published.storage_uri and uri.endswith(f"/models/fraud-detector/versions/{version}")
    annotations = pinned["metadata"]["annotations"]
    assert annotations["mlspec.dev/model-version"] == version

    out = tmp_path / "mnt-models"
    script = DOWNLOAD.format(suffix=BLOB_SUFFIX, port=port)
    done = subprocess.run(
        [sys.executable, "-c", script, uri, str(out)], env=download_env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.sha256"]
    stored = (out / "model.onnx").read_bytes()
    plain = decrypt(stored, keys)  # sealed: the serving container opens it with the environment's key
    assert plain == tiny_onnx()
    assert hashlib.sha256(plain).hexdigest() == annotations["mlspec.dev/model-sha256"]
    assert (out / "model.sha256").read_text().split()[0] == annotations["mlspec.dev/model-sha256"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["sha256"] == hashlib.sha256(stored).hexdigest()


def mlflow_logs_into(tmp_path: Path, store: str, credentials: str | None) -> None:
    """MLflow, given the artifact root mlspec renders for ``store``, writes a run's artifacts into that store."""
    import mlflow

    root = mlflow_artifact_root(store)
    assert root.startswith(("wasbs://", "s3://")) and root.endswith("/mlflow")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("uae-bank-ml/prod/fraud-detector", artifact_location=f"{root}/fraud")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, '{"auc": 0.91}', "evaluation/evaluation.json")
    key = StoreLocation.parse(store).key("mlflow", "fraud", run.info.run_id, "artifacts", "evaluation/evaluation.json")
    assert open_store(store, credentials).exists(key), f"{key} not in {store}"


@pytest.fixture
def blob_service(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Azurite, reachable as https://<account>.blob.core.windows.net from this process."""
    service = azurite()
    port = int(service["MLSPEC_TEST_AZURITE_PORT"])
    real = socket.getaddrinfo

    def local(host: Any, port_: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(BLOB_SUFFIX):
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", service["MLSPEC_TEST_AZURITE_CA"])
    monkeypatch.setenv("MLSPEC_TEST_STORE_KEY", service["MLSPEC_TEST_AZURITE_KEY"])
    return service


@pytest.mark.slow
def test_a_version_in_azure_blob_is_immutable_and_kserve_fetches_the_pinned_uri(
    tmp_path: Path, blob_service: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobServiceClient

    account, key = blob_service["MLSPEC_TEST_AZURITE_ACCOUNT"], blob_service["MLSPEC_TEST_AZURITE_KEY"]
    service = BlobServiceClient(
        f"https://{account}{BLOB_SUFFIX}", credential={"account_name": account, "account_key": key}
    )
    container = f"models-{uuid.uuid4().hex[:8]}"
    service.create_container(container)
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SSL_CERT_FILE": blob_service["MLSPEC_TEST_AZURITE_CA"],
        "REQUESTS_CA_BUNDLE": blob_service["MLSPEC_TEST_AZURITE_CA"], "AZURE_STORAGE_ACCESS_KEY": key,
    }  # fmt: skip
    store = f"azure://{account}/{container}/prod"
    publish_serve_and_fetch(
        tmp_path, store, "env://MLSPEC_TEST_STORE_KEY", env, port=int(blob_service["MLSPEC_TEST_AZURITE_PORT"])
    )
    monkeypatch.setenv("AZURE_STORAGE_ACCESS_KEY", key)  # how MLflow's wasbs:// repository is given the key
    mlflow_logs_into(tmp_path, store, "env://MLSPEC_TEST_STORE_KEY")


@pytest.mark.slow
def test_a_version_in_s3_is_immutable_and_kserve_fetches_the_pinned_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    endpoint = s3_url()
    credentials = {"AWS_ACCESS_KEY_ID": "mlspec-test", "AWS_SECRET_ACCESS_KEY": "mlspec-test-secret"}
    for name, value in {**credentials, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "me-central-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"uae-models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "me-central-1"})
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "me-central-1", **credentials}  # fmt: skip
    publish_serve_and_fetch(tmp_path, f"s3://{bucket}/prod", "", env)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)  # MLflow's own variable for an S3-compatible server
    mlflow_logs_into(tmp_path, f"s3://{bucket}/prod", None)


def test_a_pinned_version_is_rendered_with_its_exact_folder_and_gets_its_digest_when_applied(tmp_path: Path) -> None:
    store = "azure://uaebankmlprod/models"
    isvc = rendered_isvc(tmp_path, store, version=7)
    uri = "https://uaebankmlprod.blob.core.windows.net/models/models/fraud-detector/versions/7"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == uri
    assert "mlspec.dev/model-alias" not in isvc["metadata"]["annotations"]
    (pinned,) = pin_model_versions([isvc], Registry("7", "cd" * 32, uri))
    assert pinned["spec"]["predictor"]["model"]["storageUri"] == uri
    assert pinned["metadata"]["annotations"]["mlspec.dev/model-sha256"] == "cd" * 32
    assert validate_crd(pinned, ISVC_CRD) == []


def test_pinning_refuses_a_version_that_was_never_published_or_lives_elsewhere(tmp_path: Path) -> None:
    isvc = rendered_isvc(tmp_path, "azure://uaebankmlprod/models")
    with pytest.raises(TargetError, match="never published to the artifact store"):
        pin_model_versions([isvc], Registry("7", "ab" * 32, ""))
    with pytest.raises(TargetError, match="not in this environment's"):
        pin_model_versions([isvc], Registry("7", "ab" * 32, "s3://other/models/fraud-detector/versions/7"))
    with pytest.raises(TargetError, match="needs the registry"):
        pin_model_versions([isvc], None)


def test_residency_denies_an_artifact_store_outside_the_allowed_regions(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo")
    edit(root, "environments/prod.yaml", "region: uae-north}}", "region: eu-west-1}}")
    done = run_mlspec("check", "--env", "prod", "--format", "json", cwd=root)
    assert done.returncode != 0
    findings = [f for f in json.loads(done.stdout)["findings"] if f["policy"] == "residency.artifact_store"]
    assert findings and findings[0]["severity"] == "deny", done.stdout[-2000:]
    text = (root / "environments/prod.yaml").read_text().splitlines()
    line = findings[0]["line"]
    assert findings[0]["file"].endswith("environments/prod.yaml")
    assert "eu-west-1" in text[line - 1], "the finding points at the store's region"


def test_the_reference_environments_keep_their_stores_in_uae_north() -> None:
    done = run_mlspec("check", "--format", "json", cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:]
    for env in ("dev", "staging", "prod"):
        graph = Project.open(REPO).resolve(env).graph
        assert graph is not None
        store = graph.env.spec.targets.registry.artifact_store
        assert store is not None and store.uri.startswith("azure://") and store.region == "uae-north"


def test_a_store_mlspec_cannot_publish_to_is_refused_at_render(tmp_path: Path) -> None:
    root = make_project(tmp_path / "repo")
    edit(root, "environments/prod.yaml", '"s3://models-prod"', '"gs://models-prod"')
    done = run_mlspec("render", "--env", "prod", "-o", str(tmp_path / "out"), cwd=root)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    line = next(
        i for i, text in enumerate((root / "environments/prod.yaml").read_text().splitlines(), 1) if "gs://" in text
    )
    assert f"environments/prod.yaml:{line}:" in output and "error[unsupported-by-target]" in output
    assert "azure://, s3:// or file://" in output
