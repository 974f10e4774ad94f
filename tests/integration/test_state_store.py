"""The state interface on both backends: stores close as context managers and `locked` always gives the lock back.

PostgreSQL runs against the real server scripts/test_services.py starts (skipped, saying so, without it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.spec.project_file import StateConfig
from mlspec.state.base import LockedError, StateStore
from mlspec.state.store import open_store
from tests.services import fresh_database

OpenStore = Callable[[], StateStore]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenStore:
    """Opens a new store (a new connection) on one state, of the backend the test runs against."""
    if request.param == "postgres":
        monkeypatch.setenv("MLSPEC_STATE_URL", fresh_database("store"))
        config = StateConfig.model_validate({"backend": "postgres", "url": "env://MLSPEC_STATE_URL"})
    else:
        config = StateConfig()
    return lambda: open_store(config, tmp_path, "demo")


def closed_errors() -> tuple[type[Exception], ...]:
    """What each backend raises when a closed store is used."""
    import psycopg

    return (sqlite3.ProgrammingError, psycopg.OperationalError)


def holders(store: StateStore) -> list[str]:
    return [lock.holder for lock in store.locks() if lock.environment == "prod"]


def test_a_store_closes_at_the_end_of_its_with_block(opener: OpenStore) -> None:
    with opener() as store:
        assert store.read("prod").serial == 0
    with pytest.raises(closed_errors()):
        store.read("prod")


def test_a_store_closes_when_its_with_block_fails(opener: OpenStore) -> None:
    with pytest.raises(RuntimeError, match="boom"), opener() as store:
        raise RuntimeError("boom")
    with pytest.raises(closed_errors()):
        store.locks()


def test_locked_holds_the_lock_for_the_block_and_releases_it(opener: OpenStore) -> None:
    with opener() as store, opener() as other:
        with store.locked("prod", "alice@bank.ae", "apply"):
            assert holders(other) == ["alice@bank.ae"]
            with pytest.raises(LockedError, match=r"locked by alice@bank\.ae"):
                other.acquire("prod", "bob@bank.ae", "apply")
        assert holders(other) == []
        with other.locked("prod", "bob@bank.ae", "destroy"):  # free again
            assert holders(store) == ["bob@bank.ae"]


def test_locked_releases_the_lock_when_the_block_fails(opener: OpenStore) -> None:
    with opener() as store, opener() as other:
        with pytest.raises(RuntimeError, match="boom"), store.locked("prod", "alice@bank.ae", "apply"):
            assert holders(other) == ["alice@bank.ae"]
            raise RuntimeError("boom")
        assert holders(other) == []


def test_locked_that_cannot_take_the_lock_leaves_the_holders_lock_alone(opener: OpenStore) -> None:
    with opener() as store, opener() as other:
        store.acquire("prod", "alice@bank.ae", "apply")
        entered = False
        with pytest.raises(LockedError), other.locked("prod", "bob@bank.ae", "apply", wait=0.0):
            entered = True
        assert not entered
        assert holders(other) == ["alice@bank.ae"], "a lock that was never taken is not released"
        store.release("prod")
