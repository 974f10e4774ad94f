"""The stores a rehearsal uses instead of the environment's own: servers on this machine, never the real ones.

MLflow's tracking store and Feast's registry are SQLite files in the rehearsal's folder; object storage,
Redis and PostgreSQL are servers the caller runs on loopback (Azurite, an S3 server such as moto or MinIO,
redis-server, postgres). Every location is checked to be on this machine: a rehearsal writes sample data
and models, and must never reach a real store whatever the environment names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mlspec.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
S3_STAND_IN_KEYS = "rehearsal:rehearsal"  # an S3 server on loopback takes any key pair


class RehearsalError(UsageError):
    """The rehearsal cannot start: a stand-in is missing or not on this machine, or Docker or an image is absent."""


@dataclass(frozen=True)
class StandIns:
    """Where the rehearsal's stores are (each optional; what the environment needs is required)."""

    workdir: Path
    azure: str | None = None  # an Azure Storage connection string (Azurite)
    s3: str | None = None  # an S3 endpoint URL
    redis: str | None = None  # host:port of a Redis server (Feast's online store)
    postgres: str | None = None  # a postgresql:// URL (warehouse tables of batch sinks)
    ca_file: Path | None = None  # the CA the stand-ins' TLS certificates chain to

    def __post_init__(self) -> None:
        for option, host in (
            ("--azure", _azure_host(self.azure) if self.azure else None),
            ("--s3", urlparse(self.s3).hostname if self.s3 else None),
            ("--redis", self.redis.rsplit(":", 1)[0].strip("[]") if self.redis else None),
            ("--postgres", urlparse(self.postgres).hostname if self.postgres else None),
        ):
            if host is not None and host not in LOOPBACK:
                raise RehearsalError(
                    f"{option} points at {host}, which is not this machine: a rehearsal writes sample data and "
                    "models, so it only talks to stand-ins on loopback",
                    hint=f"start the stand-in on 127.0.0.1 and pass its address to {option}",
                )

    @property
    def tracking_uri(self) -> str:
        """MLflow's tracking and registry store: a SQLite file in the rehearsal folder."""
        return f"sqlite:///{self.workdir / 'mlflow.db'}"

    @property
    def feast_registry(self) -> str:
        """Feast's SQL registry: a SQLite file in the rehearsal folder."""
        return f"sqlite:///{self.workdir / 'feast-registry.db'}"

    def require(self, what: str, option: str, needed_for: str) -> str:
        """The stand-in ``what`` (its option's value), or a RehearsalError saying what needs it."""
        value = getattr(self, what)
        if not value:
            raise RehearsalError(
                f"the rehearsal needs a stand-in for {needed_for}",
                hint=f"run one on 127.0.0.1 and pass {option} (or set MLSPEC_REHEARSE_{what.upper()})",
            )
        return str(value)

    def store_variables(self) -> dict[str, str]:
        """What every container gets to reach the object-store stand-ins (adlfs, MLflow and boto3 read these)."""
        found: dict[str, str] = {}
        if self.azure:
            found["AZURE_STORAGE_CONNECTION_STRING"] = self.azure
        if self.s3:
            found |= {
                "AWS_ENDPOINT_URL": self.s3,
                "AWS_ACCESS_KEY_ID": "rehearsal",
                "AWS_SECRET_ACCESS_KEY": "rehearsal",
            }
        if self.ca_file:
            found |= {"SSL_CERT_FILE": str(self.ca_file), "REQUESTS_CA_BUNDLE": str(self.ca_file)}
        return found

    def postgres_parts(self) -> dict[str, str]:
        """The PG_* keys of a Feast connection, from the PostgreSQL stand-in's URL."""
        url = urlparse(self.require("postgres", "--postgres", "Feast's PostgreSQL stores"))
        return {
            "PG_HOST": url.hostname or "127.0.0.1",
            "PG_PORT": str(url.port or 5432),
            "PG_DATABASE": url.path.lstrip("/") or "postgres",
            "PG_USER": url.username or "postgres",
            "PG_PASSWORD": url.password or "",
        }


def _azure_host(connection: str) -> str:
    """The host an Azure Storage connection string sends requests to (its BlobEndpoint)."""
    match = re.search(r"BlobEndpoint=([^;]+)", connection)
    if match is None:
        raise RehearsalError(
            "the --azure connection string has no BlobEndpoint, so it would reach Azure itself",
            hint="use the emulator's: DefaultEndpointsProtocol=http;AccountName=...;AccountKey=...;"
            "BlobEndpoint=http://127.0.0.1:10000/<account>;",
        )
    return urlparse(match.group(1)).hostname or ""
