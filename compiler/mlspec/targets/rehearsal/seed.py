"""Put sample data where the environment's offline store reads it, in the object-store stand-ins."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlspec.runtime.object_store import StoreLocation
from mlspec.targets.rehearsal.standins import RehearsalError, StandIns


@dataclass(frozen=True)
class Sample:
    """One source's location in the environment and the local file that stands in for its data."""

    source: str
    location: str  # az://container@account.blob.core.windows.net/key, s3://bucket/key
    file: Path


def _split(location: str) -> tuple[str, str, str]:
    """(scheme, container or bucket, key) of an object-store location."""
    parsed = urlparse(location)
    container = parsed.netloc.split("@", 1)[0]
    return parsed.scheme, container, parsed.path.lstrip("/")


def seed(samples: list[Sample], standins: StandIns) -> int:
    """Upload every sample to its location in the stand-ins (replacing what a previous rehearsal put there);
    returns the bytes uploaded."""
    uploaded = 0
    for sample in samples:
        if not sample.file.is_file():
            raise RehearsalError(
                f"DataSource '{sample.source}' has no sample data: {sample.file} does not exist",
                hint="generate the local environment's data first (make demo does), or point the source at a file",
            )
        scheme, container, key = _split(sample.location)
        data = sample.file.read_bytes()
        if scheme in ("az", "abfs", "abfss"):
            _upload_azure(standins, container, key, data, sample.source)
        elif scheme == "s3":
            _upload_s3(standins, container, key, data, sample.source)
        else:
            raise RehearsalError(f"DataSource '{sample.source}' is at {sample.location}: no stand-in for {scheme}://")
        uploaded += len(data)
    return uploaded


def prepare_store(store_uri: str, standins: StandIns) -> None:
    """Create the artifact store's container (``azure://account/container``) or bucket (``s3://bucket``) in the
    stand-in, as the environment's own store has it before anything is published."""
    where = StoreLocation.parse(store_uri)
    if where.scheme == "azure":
        _azure_container(standins, where.container, f"the artifact store {store_uri}")
    elif where.scheme == "s3":
        _s3_bucket(standins, where.bucket, f"the artifact store {store_uri}")


class StandInStore:
    """The artifact store's stand-in, read as a serving runtime's download reads the real one."""

    def __init__(self, store_uri: str, standins: StandIns) -> None:
        """The stand-in of ``store_uri`` (``azure://account/container``, ``s3://bucket``)."""
        self.where = StoreLocation.parse(store_uri)
        self.standins = standins

    def read(self, key: str) -> bytes:
        """The object's bytes; RehearsalError when the stand-in has no such object."""
        what = f"the artifact store {self.where.scheme}://"
        try:
            if self.where.scheme == "azure":
                blob = _azure_container(self.standins, self.where.container, what).download_blob(key)
                return bytes(blob.readall())
            if self.where.scheme == "s3":
                bucket = self.where.bucket
                return bytes(_s3_bucket(self.standins, bucket, what).get_object(Bucket=bucket, Key=key)["Body"].read())
        except Exception as exc:  # the SDKs' own errors: not found, denied
            raise RehearsalError(f"cannot read {key} from the stand-in of {what}: {exc}") from None
        raise RehearsalError(f"no stand-in for an artifact store at {self.where.scheme}://")


def _azure_container(standins: StandIns, container: str, what: str) -> Any:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    connection = standins.require("azure", "--azure", f"Azure Blob ({what})")
    verify = str(standins.ca_file) if standins.ca_file else True
    service = BlobServiceClient.from_connection_string(connection, connection_verify=verify)
    client = service.get_container_client(container)
    with contextlib.suppress(ResourceExistsError):  # a previous rehearsal made it
        client.create_container()
    return client


def _s3_bucket(standins: StandIns, bucket: str, what: str) -> Any:
    import boto3

    endpoint = standins.require("s3", "--s3", f"S3 ({what})")
    variables = standins.store_variables()
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        verify=str(standins.ca_file) if standins.ca_file else None,
    )  # fmt: skip
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    return client


def _upload_azure(standins: StandIns, container: str, key: str, data: bytes, source: str) -> None:
    _azure_container(standins, container, f"DataSource '{source}'").upload_blob(key, data, overwrite=True)


def _upload_s3(standins: StandIns, bucket: str, key: str, data: bytes, source: str) -> None:
    _s3_bucket(standins, bucket, f"DataSource '{source}'").put_object(Bucket=bucket, Key=key, Body=data)
