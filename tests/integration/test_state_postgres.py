"""The PostgreSQL state backend against a real server: concurrent applies from separate processes serialize,
locks of other machines are honoured and taken over when their holder's connection is gone, crashes converge,
the audit chain verifies, projects sharing a database stay apart, and the URL's password is never printed.

(test_lifecycle.py runs the whole plan/apply suite against PostgreSQL too.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlspec.app.paths import state_store
from mlspec.app.project import Project
from mlspec.errors import MlspecError
from mlspec.state.base import LockedError, verify_chain
from mlspec.state.model import ResourceState
from tests.conftest import run_mlspec
from tests.integration.test_lifecycle import make_project
from tests.services import fresh_database

PASSWORD = "pw-Zq81-never-printed"


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database, its URL carrying a password (the test server trusts loopback and ignores it)."""
    plain = fresh_database("state")
    with_password = plain.replace("://mlspec@", f"://mlspec:{PASSWORD}@", 1)
    assert PASSWORD in with_password
    monkeypatch.setenv("MLSPEC_STATE_URL", with_password)
    return with_password


@pytest.fixture
def project(tmp_path: Path, url: str) -> Path:
    return make_project(tmp_path / "repo", "postgres")


def holder(project: Path, *, host: str | None = None, seconds: float = 60) -> subprocess.Popen[str]:
    """A separate process that takes prod's lock as alice (optionally claiming another host) and keeps it."""
    fake = f"import socket; socket.gethostname = lambda: {host!r}; " if host else ""
    code = (
        f"import sys, time; {fake}from pathlib import Path; from mlspec.app.paths import state_store; "
        "from mlspec.app.project import Project; s = state_store(Project.open(Path(sys.argv[1]))); "
        f"s.acquire('prod', 'alice@bank.ae', 'apply'); print('locked', flush=True); time.sleep({seconds}); "
        "s.release('prod'); s.close()"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(project)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def no_password(*outputs: str) -> None:
    for text in outputs:
        assert PASSWORD not in text


def test_two_concurrent_applies_from_two_processes_serialize(project: Path) -> None:
    blocker = holder(project, seconds=2)  # both applies start while the lock is held, then race for it
    args = ("apply", "--env", "prod", "--auto-approve", "--lock-timeout", "60", "-C", str(project))
    env = {**os.environ, "NO_COLOR": "1"}
    applies = [
        subprocess.Popen([sys.executable, "-m", "mlspec", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(2)
    ]  # fmt: skip
    results = [p.communicate(timeout=120) for p in applies]
    blocker.wait(timeout=30)
    assert [p.returncode for p in applies] == [0, 0], results
    outs = [out for out, _ in results]
    assert sorted("Apply complete: 7 applied" in out for out in outs) == [False, True], outs
    assert sum("Nothing to apply." in out for out in outs) == 1, "the second re-planned after the first finished"
    no_password(*(out + err for out, err in results))
    store = state_store(Project.open(project))
    try:
        records = store.audit("prod")
        assert verify_chain(records) == []
        changes = [r.record["ref"] for r in records if r.record.get("type") == "change"]
        assert len(changes) == len(set(changes)) == 7, "each resource applied exactly once"
        assert store.locks() == []
    finally:
        store.close()


def test_a_lock_held_on_another_machine_is_honoured_until_its_connection_is_gone(project: Path) -> None:
    remote = holder(project, host="build-agent-7")
    try:
        refused = run_mlspec("apply", "--env", "prod", "--auto-approve", "-C", str(project))
        assert refused.returncode == 1 and "locked by alice@bank.ae on build-agent-7" in refused.stderr
        assert f"pid {remote.pid}" in refused.stderr
        listed = run_mlspec("state", "list", "-C", str(project))
        assert "held by alice@bank.ae" in listed.stdout
        no_password(refused.stdout, refused.stderr, listed.stdout, listed.stderr)
    finally:
        remote.kill()
        remote.wait()
    # the other host's process is gone (its pid means nothing here): the server dropped its session, so it is taken
    done = run_mlspec("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert done.returncode == 0, done.stderr


def test_a_waiting_apply_applies_when_the_holder_finishes(project: Path) -> None:
    blocker = holder(project, seconds=1.5)
    start = time.monotonic()
    waited = run_mlspec("apply", "--env", "prod", "--auto-approve", "--lock-timeout", "30", "-C", str(project))
    assert waited.returncode == 0 and "Apply complete: 7 applied" in waited.stdout, waited.stderr
    assert time.monotonic() - start >= 1.0
    blocker.wait(timeout=30)


def test_expired_leases_and_broken_locks(project: Path) -> None:
    first, second = state_store(Project.open(project)), state_store(Project.open(project))
    try:
        first.acquire("prod", "alice", "apply", lease=0)
        time.sleep(1.1)
        second.acquire("prod", "bob", "apply")  # alice's lease ran out (by the server's clock)
        with pytest.raises(LockedError, match="locked by bob"):
            first.acquire("prod", "carol", "apply")
        removed = first.break_lock("prod")
        assert removed is not None and removed.holder == "bob"
        first.acquire("prod", "carol", "apply")
        assert [lock.holder for lock in second.locks()] == ["carol"]
        first.release("prod")
        assert second.locks() == []
    finally:
        first.close()
        second.close()


def test_crash_converges_and_audit_verifies_on_postgres(project: Path) -> None:
    crashed = run_mlspec(
        "apply",
        "--env",
        "prod",
        "--auto-approve",
        "-C",
        str(project),
        env={"MLSPEC_FAILPOINTS": "apply.after_target=4"},
    )
    assert crashed.returncode == -9
    recovered = run_mlspec("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert recovered.returncode == 0, recovered.stderr
    verified = run_mlspec("audit", "verify", "-C", str(project))
    assert verified.returncode == 0 and "intact" in verified.stdout
    log = run_mlspec("audit", "log", "--env", "prod", "-C", str(project))
    plan = run_mlspec("plan", "--env", "prod", "-C", str(project))
    assert "Plan: 0 to add, 0 to change, 0 to destroy" in plan.stdout
    no_password(*(p.stdout + p.stderr for p in (crashed, recovered, verified, log, plan)))


def test_the_password_never_appears_in_errors(project: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSPEC_STATE_URL", url.rsplit("/", 1)[0] + "/missing_db")
    missing = run_mlspec("plan", "--env", "prod", "-C", str(project))
    assert missing.returncode == 1 and "cannot connect to the state database" in missing.stderr
    monkeypatch.setenv("MLSPEC_STATE_URL", url.replace("127.0.0.1:", "127.0.0.1:1", 1))  # a port nobody listens on
    unreachable = run_mlspec("state", "list", "-C", str(project))
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr
    no_password(missing.stdout, missing.stderr, unreachable.stdout, unreachable.stderr)


def test_projects_sharing_a_database_keep_their_own_schema(tmp_path: Path, url: str) -> None:
    one, two = make_project(tmp_path / "one", "postgres"), make_project(tmp_path / "two", "postgres")
    (two / "mlspec.yaml").write_text((two / "mlspec.yaml").read_text().replace("name: demo", "name: other"))
    assert run_mlspec("apply", "--env", "prod", "--auto-approve", "-C", str(one)).returncode == 0
    plan = run_mlspec("plan", "--env", "prod", "-C", str(two))
    assert "Plan: 7 to add" in plan.stdout, "the other project sees none of demo's state"
    # pointing a second project at the first one's schema is refused, never mixed
    text = (two / "mlspec.yaml").read_text()
    (two / "mlspec.yaml").write_text(
        text.replace("url: env://MLSPEC_STATE_URL", "url: env://MLSPEC_STATE_URL, schema: mlspec_demo")
    )
    clash = run_mlspec("plan", "--env", "prod", "-C", str(two))
    assert clash.returncode == 1 and "holds project 'demo', not 'other'" in clash.stderr


def test_schema_is_versioned(project: Path) -> None:
    store = state_store(Project.open(project))
    store.close()
    import psycopg

    with psycopg.connect(os.environ["MLSPEC_STATE_URL"], autocommit=True) as connection:
        version = connection.execute("SELECT value FROM mlspec_demo.meta WHERE key = 'schema_version'").fetchone()
        assert version == ("2",)
        # a version-1 schema (before the audit table was append-only) is brought up to version 2 on first use
        connection.execute("DROP TRIGGER audit_append_only ON mlspec_demo.audit")
        connection.execute("DROP TRIGGER audit_no_truncate ON mlspec_demo.audit")
        connection.execute("DROP FUNCTION mlspec_demo.audit_append_only()")
        connection.execute("GRANT UPDATE, DELETE ON mlspec_demo.audit TO CURRENT_USER")
        connection.execute("UPDATE mlspec_demo.meta SET value = '1' WHERE key = 'schema_version'")
    state_store(Project.open(project)).close()
    with psycopg.connect(os.environ["MLSPEC_STATE_URL"], autocommit=True) as connection:
        triggers = connection.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'mlspec_demo.audit'::regclass ORDER BY tgname"
        ).fetchall()
        assert triggers == [("audit_append_only",), ("audit_no_truncate",)]
        connection.execute("UPDATE mlspec_demo.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(MlspecError, match="is version 99; this mlspec knows version 2"):
        state_store(Project.open(project))


def test_writes_bump_the_serial_with_the_audit_record_in_one_transaction(project: Path) -> None:
    store = state_store(Project.open(project))
    try:
        resource = ResourceState("DataSource/txns", "f" * 64, {"a": 1})
        store.put("prod", resource, ("ci", "abc", "", {"type": "change", "ref": resource.ref}))
        store.put("dev", resource)
        store.delete("prod", resource.ref, ("ci", "abc", "", {"type": "change", "ref": resource.ref}))
        assert store.read("prod").serial == 2 and store.read("prod").resources == {}
        assert store.read("dev").resources == {resource.ref: resource}
        assert store.environments() == ["dev", "prod"]
        assert [r.seq for r in store.audit()] == [1, 2] and verify_chain(store.audit()) == []
    finally:
        store.close()
