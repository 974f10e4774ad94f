"""The artifact store's URI forms (what MLflow and KServe accept) and the version layout on a disk store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlspec.runtime.object_store import (
    AlreadyPublished,
    StoreLocation,
    kserve_storage_uri,
    mlflow_artifact_root,
    open_store,
    publish_model_version,
)


@pytest.mark.parametrize(
    ("store", "kserve", "mlflow"),
    [
        (
            "azure://uaebankmlprod/models",
            "https://uaebankmlprod.blob.core.windows.net/models/models/fraud/versions/3",
            "wasbs://models@uaebankmlprod.blob.core.windows.net/mlflow",
        ),
        (
            "azure://uaebankmlprod/models/prod/",
            "https://uaebankmlprod.blob.core.windows.net/models/prod/models/fraud/versions/3",
            "wasbs://models@uaebankmlprod.blob.core.windows.net/prod/mlflow",
        ),
        ("s3://bank-models", "s3://bank-models/models/fraud/versions/3", "s3://bank-models/mlflow"),
        ("s3://bank-models/prod", "s3://bank-models/prod/models/fraud/versions/3", "s3://bank-models/prod/mlflow"),
    ],
)
def test_store_uris_become_the_forms_kserve_and_mlflow_read(store: str, kserve: str, mlflow: str) -> None:
    assert kserve_storage_uri(store, "fraud", 3) == kserve
    assert mlflow_artifact_root(store) == mlflow


def test_an_azure_store_needs_a_container() -> None:
    with pytest.raises(ValueError, match="azure://<account>/<container>"):
        StoreLocation.parse("azure://uaebankmlprod")


def test_a_version_is_written_once_with_its_digest_and_manifest(tmp_path: Path) -> None:
    store = (tmp_path / "store").as_uri()
    data = b"onnx bytes"
    sha = hashlib.sha256(data).hexdigest()
    published = publish_model_version(
        open_store(store), store, model="fraud", version=4, model_bytes=data, sha256=sha, sealed=None, run_id="r1"
    )
    folder = tmp_path / "store" / "models" / "fraud" / "versions" / "4"
    assert published.storage_uri == folder.as_uri()
    assert (folder / "model.onnx").read_bytes() == data
    assert (folder / "model.sha256").read_text() == f"{sha}  model.onnx\n"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_sha256"] == sha and manifest["sealed"] is False and manifest["run_id"] == "r1"
    with pytest.raises(AlreadyPublished, match="never rewritten"):
        publish_model_version(
            open_store(store), store, model="fraud", version=4, model_bytes=b"other", sha256="0", sealed=None
        )
    assert (folder / "model.onnx").read_bytes() == data, "the first write stands"
