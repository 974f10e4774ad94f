"""Registered models in the environment's object store, in an immutable, version-addressed layout.

One folder per registered version, written once by the register step::

    <root>/models/<model>/versions/<n>/model.onnx      the model: an mlspec envelope (AES-GCM) when sealed
    <root>/models/<model>/versions/<n>/model.sha256    sha256 of the plaintext ONNX model, ``<hex>  model.onnx``
    <root>/models/<model>/versions/<n>/manifest.json   what the folder holds: digests, sealed or not, the run

Store URIs are the Environment's ``artifact_store.uri``: ``azure://<account>/<container>[/<prefix>]`` (Azure
Blob), ``s3://<bucket>[/<prefix>]`` or ``file://<path>``. Every object is created with create-only
semantics (Azure ``If-None-Match: *``, S3 ``IfNoneMatch='*'``, ``O_EXCL`` on a disk), the manifest last:
a second publish of a version is refused, never an overwrite. KServe reads the folder through
:func:`kserve_storage_uri` (Azure's ``https://<account>.blob.core.windows.net/...`` form) and MLflow keeps its
run artifacts under :func:`mlflow_artifact_root` (``wasbs://`` for Azure).

Credentials come by reference only (:func:`mlspec.runtime.context.resolve_reference`): for Azure an account
key, a SAS token or a connection string; for S3 ``<access key id>:<secret access key>``. Without one, Azure
uses ``AZURE_STORAGE_ACCESS_KEY`` (KServe's variable) and S3 boto3's own chain (``AWS_*``, workload identity);
``AWS_ENDPOINT_URL`` and ``MLSPEC_AZURE_BLOB_ENDPOINT`` point at a stand-in store (Azurite, an S3 server).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from mlspec.runtime.context import resolve_reference

MANIFEST_SCHEMA = 1
AZURE_BLOB_HOST = "blob.core.windows.net"


class PublishError(Exception):
    """A model version cannot be written to the store: it exists already, or the store refused the write."""


class AlreadyPublished(PublishError):
    """The version's objects exist already; a registered version is never overwritten."""


@dataclass(frozen=True)
class StoreLocation:
    """A store URI taken apart: ``scheme``, ``bucket`` (S3 bucket or Azure account), ``container`` (Azure only),
    ``prefix`` (no slashes at either end)."""

    scheme: str
    bucket: str
    container: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> StoreLocation:
        """``azure://account/container/prefix``, ``s3://bucket/prefix``, ``gs://...``, ``file:///path``."""
        parsed = urlparse(uri)
        path = unquote(parsed.path).strip("/")
        if parsed.scheme == "azure":
            container, _, prefix = path.partition("/")
            if not parsed.netloc or not container:
                raise ValueError(f"{uri}: an Azure store is azure://<account>/<container>[/<prefix>]")
            return cls("azure", parsed.netloc, container, prefix)
        if parsed.scheme == "file":
            return cls("file", "", "", unquote(parsed.path).rstrip("/"))
        if not parsed.scheme or not parsed.netloc:
            raise ValueError(f"{uri}: not a store URI (azure://, s3://, gs:// or file://)")
        return cls(parsed.scheme, parsed.netloc, "", path)

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))


def version_folder(model: str, version: str | int) -> str:
    """The version's folder, relative to the store's root."""
    return f"models/{model}/versions/{version}"


def kserve_storage_uri(store_uri: str, model: str, version: str | int) -> str:
    """The ``storageUri`` KServe's storage initializer downloads the version from (Azure Blob in its https form)."""
    where = StoreLocation.parse(store_uri)
    key = where.key(version_folder(model, version))
    if where.scheme == "azure":
        return f"https://{where.bucket}.{AZURE_BLOB_HOST}/{where.container}/{key}"
    if where.scheme == "file":
        return Path(where.prefix, version_folder(model, version)).as_uri()
    return f"{where.scheme}://{where.bucket}/{key}"


def mlflow_artifact_root(store_uri: str) -> str:
    """Where MLflow keeps run artifacts in the store: ``wasbs://<container>@<account>.blob.core.windows.net/...`` for
    Azure Blob, the store's own URI (``s3://``, ``gs://``, ``file://``) otherwise, under ``mlflow/``."""
    where = StoreLocation.parse(store_uri)
    key = where.key("mlflow")
    if where.scheme == "azure":
        return f"wasbs://{where.container}@{where.bucket}.{AZURE_BLOB_HOST}/{key}"
    if where.scheme == "file":
        return Path(where.prefix, "mlflow").as_uri()
    return f"{where.scheme}://{where.bucket}/{key}"


class ObjectStore(Protocol):
    """What publishing needs (create, exists) and what a serving runtime's download needs (read)."""

    def create(self, key: str, data: bytes) -> None:
        """Write ``key`` only if it does not exist; raises AlreadyPublished when it does."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def read(self, key: str) -> bytes:
        """The object's bytes; PublishError when it cannot be read."""
        ...


class LocalStore:
    """A folder (``file://``), for the laptop and tests."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def create(self, key: str, data: bytes) -> None:
        """Exclusive create (``O_EXCL``)."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb") as handle:
                handle.write(data)
        except FileExistsError:
            raise AlreadyPublished(f"{path} exists") from None

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return (self.root / key).exists()

    def read(self, key: str) -> bytes:
        """The file's bytes."""
        try:
            return (self.root / key).read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read {self.root / key}: {exc.strerror or exc}") from None


class AzureBlobStore:
    """One Azure Blob container (azure-storage-blob); creates send ``If-None-Match: *``."""

    def __init__(self, account: str, container: str, secret: str | None, environ: Mapping[str, str]) -> None:
        from azure.storage.blob import BlobServiceClient

        endpoint = environ.get("MLSPEC_AZURE_BLOB_ENDPOINT") or f"https://{account}.{AZURE_BLOB_HOST}"
        secret = secret or environ.get("AZURE_STORAGE_ACCESS_KEY")
        if secret and ("AccountKey=" in secret or "SharedAccessSignature=" in secret):  # a connection string
            service = BlobServiceClient.from_connection_string(secret)
        else:
            service = BlobServiceClient(endpoint, credential=_azure_credential(account, secret))
        self.container = service.get_container_client(container)

    def create(self, key: str, data: bytes) -> None:
        """Upload refusing an existing blob (the service answers 409 BlobAlreadyExists)."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self.container.upload_blob(key, data, overwrite=False)
        except ResourceExistsError:
            raise AlreadyPublished(f"blob {key} exists") from None

    def exists(self, key: str) -> bool:
        """Whether the blob exists."""
        return bool(self.container.get_blob_client(key).exists())

    def read(self, key: str) -> bytes:
        """The blob's bytes."""
        from azure.core.exceptions import AzureError

        try:
            return bytes(self.container.download_blob(key).readall())
        except AzureError as exc:
            raise PublishError(f"blob {key}: {str(exc).splitlines()[0]}") from None


def _azure_credential(account: str, secret: str | None) -> Any:
    if secret is None:
        try:
            from azure.identity import DefaultAzureCredential  # workload identity on AKS
        except ImportError:
            return None
        return DefaultAzureCredential()
    if secret.startswith("?") or secret.startswith("sv="):
        return secret.lstrip("?")  # a SAS token
    return {"account_name": account, "account_key": secret}


class S3Store:
    """One S3 bucket (boto3); creates send ``If-None-Match: *`` (S3 conditional writes)."""

    def __init__(self, bucket: str, secret: str | None, environ: Mapping[str, str]) -> None:
        import boto3

        keys: dict[str, str] = {}
        if secret:
            key_id, _, secret_key = secret.partition(":")
            keys = {"aws_access_key_id": key_id, "aws_secret_access_key": secret_key}
        endpoint = environ.get("AWS_ENDPOINT_URL") or None
        self.client = boto3.client("s3", endpoint_url=endpoint, **keys)
        self.bucket = bucket

    def create(self, key: str, data: bytes) -> None:
        """PutObject with IfNoneMatch='*': the service answers 412 when the key exists."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise AlreadyPublished(f"s3://{self.bucket}/{key} exists") from None
            raise PublishError(f"s3://{self.bucket}/{key}: {code or exc}") from None

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def read(self, key: str) -> bytes:
        """The object's bytes."""
        from botocore.exceptions import ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            raise PublishError(f"s3://{self.bucket}/{key}: {exc.response.get('Error', {}).get('Code', exc)}") from None


def open_store(store_uri: str, credentials: str | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """The ObjectStore for a store URI; ``credentials`` is a reference (env://, secret://), resolved here."""
    env = os.environ if environ is None else environ
    secret = resolve_reference(credentials, env) if credentials else None
    where = StoreLocation.parse(store_uri)
    if where.scheme == "azure":
        return AzureBlobStore(where.bucket, where.container, secret, env)
    if where.scheme == "s3":
        return S3Store(where.bucket, secret, env)
    if where.scheme == "file":
        return LocalStore("/")  # keys carry the folder's absolute path (less its leading slash)
    raise PublishError(f"{store_uri}: mlspec writes models to azure://, s3:// or file:// stores")


@dataclass(frozen=True)
class PublishedVersion:
    """Where a version was written and what a server needs to check it."""

    store_uri: str  # the version's folder as a store URI
    storage_uri: str  # the same folder as KServe's storageUri
    sha256: str  # of the plaintext ONNX model
    object_sha256: str  # of the stored model.onnx (the envelope when sealed)
    manifest: dict[str, Any]


def publish_model_version(
    store: ObjectStore,
    store_uri: str,
    *,
    model: str,
    version: str | int,
    model_bytes: bytes,
    sha256: str,
    sealed: dict[str, str] | None,
    run_id: str = "",
    environment: str = "",
    features: tuple[str, ...] | list[str] = (),
) -> PublishedVersion:
    """Write one registered version (model.onnx, model.sha256, manifest.json last); refuses an existing version.

    ``model_bytes`` are what is stored: the AES-GCM envelope when ``sealed`` names the key (``key_ref``,
    ``key_id``), the plain ONNX model otherwise; ``sha256`` is always the plaintext model's.
    """
    where = StoreLocation.parse(store_uri)
    folder = version_folder(model, version)
    manifest_key = where.key(folder, "manifest.json")
    if store.exists(manifest_key) or store.exists(where.key(folder, "model.onnx")):
        raise AlreadyPublished(f"{model} version {version} is already in {store_uri}; a version is never rewritten")
    object_sha = hashlib.sha256(model_bytes).hexdigest()
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA,
        "model": model,
        "version": str(version),
        "environment": environment,
        "run_id": run_id,
        "format": "onnx",
        "features": list(features),  # the model input's column order: what the serving runtime takes
        "files": {"model.onnx": {"sha256": object_sha, "bytes": len(model_bytes)}},
        "model_sha256": sha256,
        # a sealed object is an mlspec envelope: the serving container must decrypt it with the key before loading
        "sealed": sealed is not None,
        "encryption": {"format": "mlspec-envelope/aes-256-gcm", **sealed} if sealed is not None else None,
    }
    store.create(where.key(folder, "model.onnx"), model_bytes)
    store.create(where.key(folder, "model.sha256"), f"{sha256}  model.onnx\n".encode())
    store.create(manifest_key, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    folder_uri = store_uri.rstrip("/") + "/" + folder
    return PublishedVersion(folder_uri, kserve_storage_uri(store_uri, model, version), sha256, object_sha, manifest)


VERSION_FILES = ("manifest.json", "model.sha256", "model.onnx")


class ReadableStore(Protocol):
    """What a version's download needs."""

    def read(self, key: str) -> bytes:
        """The object's bytes."""
        ...


def download_version(
    store: ReadableStore, store_uri: str, model: str, version: str | int, into: Path
) -> dict[str, Any]:
    """Copy one published version's folder into ``into`` (what KServe's storage initializer leaves in
    ``/mnt/models``); returns its manifest. PublishError when a file is missing or is not what the manifest says."""
    where = StoreLocation.parse(store_uri)
    folder = version_folder(model, version)
    into.mkdir(parents=True, exist_ok=True)
    files = {name: store.read(where.key(folder, name)) for name in VERSION_FILES}
    manifest: dict[str, Any] = json.loads(files["manifest.json"])
    recorded = manifest.get("files", {}).get("model.onnx", {}).get("sha256")
    if recorded != hashlib.sha256(files["model.onnx"]).hexdigest():
        raise PublishError(f"{store_uri}/{folder}/model.onnx is not the object its manifest records")
    for name, data in files.items():
        (into / name).write_bytes(data)
    return manifest
