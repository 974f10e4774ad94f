"""The real servers `make test` starts (scripts/test_services.py), for tests that need them: PostgreSQL, Redis,
Azurite, an S3 server and Prometheus."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest


def _url(variable: str, name: str) -> str:
    url = os.environ.get(variable)
    if not url:
        why = os.environ.get("MLSPEC_TEST_SERVICES_SKIPPED") or (
            "not started: run the suite with `make test` (scripts/test_services.py starts it)"
        )
        pytest.skip(f"{name} server unavailable: {why}")
    return url


def postgres_url() -> str:
    """The server's URL (database ``postgres``)."""
    return _url("MLSPEC_TEST_POSTGRES_URL", "PostgreSQL")


def redis_url() -> str:
    """The Redis server's URL."""
    return _url("MLSPEC_TEST_REDIS_URL", "Redis")


def fresh_database(prefix: str = "t") -> str:
    """A new, empty database on the test server (so tests never see each other's rows); returns its URL."""
    import psycopg

    base = postgres_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + f"/{name}"


def _required(variables: tuple[str, ...], name: str) -> dict[str, str]:
    """The service's variables; a missing service skips with the reason, and fails under CI (CI=true), where
    scripts/test_services.py must have started it: nothing is skipped silently there."""
    missing = [v for v in variables if not os.environ.get(v)]
    if not missing:
        return {v: os.environ[v] for v in variables}
    why = os.environ.get("MLSPEC_TEST_SERVICES_SKIPPED") or (
        "not started: run the suite with `make test` (scripts/test_services.py starts it)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{name} unavailable in CI: {why}")
    pytest.skip(f"{name} unavailable: {why}")


def azurite() -> dict[str, str]:
    """Azurite over HTTPS: port, account name and key, and the CA file that signs its certificate."""
    return _required(
        (
            "MLSPEC_TEST_AZURITE_PORT",
            "MLSPEC_TEST_AZURITE_ACCOUNT",
            "MLSPEC_TEST_AZURITE_KEY",
            "MLSPEC_TEST_AZURITE_CA",
        ),
        "Azurite (Azure Blob emulator)",
    )


def s3_url() -> str:
    """The S3 server's endpoint URL."""
    return _required(("MLSPEC_TEST_S3_URL",), "S3 server (moto)")["MLSPEC_TEST_S3_URL"]


def prometheus() -> tuple[str, Path]:
    """Prometheus's URL and the folder whose file_sd JSON files list what it scrapes (every second)."""
    found = _required(("MLSPEC_TEST_PROMETHEUS", "MLSPEC_TEST_PROMETHEUS_TARGETS"), "Prometheus")
    return found["MLSPEC_TEST_PROMETHEUS"], Path(found["MLSPEC_TEST_PROMETHEUS_TARGETS"])
