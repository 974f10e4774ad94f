"""The real PostgreSQL and Redis servers `make test` starts (scripts/test_services.py), for tests that need them."""

from __future__ import annotations

import os
import uuid

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
