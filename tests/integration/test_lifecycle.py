"""Plan and apply: idempotent, stale plans refused, prune, locks, failures, crash safety, drift, audit, rollback.

Every test runs twice: against the SQLite state file and against PostgreSQL (a fresh database per test,
named to mlspec.yaml through MLSPEC_STATE_URL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.app.applying import apply_environment
from mlspec.app.paths import state_store
from mlspec.app.planning import plan_environment
from mlspec.app.project import Project
from mlspec.state.base import verify_chain
from tests.conftest import CliResult, minimal_platform, recorded_images, run_mlspec, write_files
from tests.services import fresh_database

PROJECT = "apiVersion: mlspec/v1\nkind: Project\nmetadata: {name: demo, owner: platform}\nspec: {specs: [specs], environments: environments}\n"
PROD_EXTRA = """  encryption: {kms_key: kms://prod, tls: required}
  identity: {issuer: "https://login.example.com/bank/v2.0"}
  targets:
    kubernetes: {namespace: ml-prod}
    serving: kserve
    images: {registry: registry.test/ml}
    registry: {artifact_store: {uri: "s3://models-prod", region: uae-north}}
"""


POSTGRES_STATE = "  state: {backend: postgres, url: env://MLSPEC_STATE_URL}\n"


def make_project(root: Path, backend: str = "sqlite") -> Path:
    """A small platform: one of each kind, a prod environment on KServe, owners everywhere."""
    parts = minimal_platform().split("---\n")
    env = next(p for p in parts if "kind: Environment" in p) + PROD_EXTRA
    specs = [
        p if "owner:" in p else p.replace("metadata: {name: ", "metadata: {owner: team, name: ")
        for p in parts
        if "Environment" not in p and "Waiver" not in p
    ]
    specs = [
        s.replace(
            "architecture: {type: mlp, hidden: [16]}",
            "architecture: {type: mlp, hidden: [16]}\n  evaluation: {gates: {auc: '>= 0.8'}, explainability: true}",
        )
        for s in specs
    ]
    project = PROJECT
    if backend == "postgres":
        project = project.replace(
            "spec: {specs: [specs], environments: environments}\n",
            "spec:\n  specs: [specs]\n  environments: environments\n" + POSTGRES_STATE,
        )
    files = {"mlspec.yaml": project, "environments/prod.yaml": env, "specs/all.yaml": "---\n".join(specs)}
    write_files(root, {**files, "images.lock.json": recorded_images("registry.test/ml")})
    return root


def edit(root: Path, path: str, old: str, new: str) -> None:
    target = root / path
    text = target.read_text()
    assert old in text, (path, old)
    target.write_text(text.replace(old, new))


def applied_state(root: Path) -> dict[str, str]:
    store = state_store(Project.open(root))
    try:
        return {ref: r.fingerprint for ref, r in store.read("prod").resources.items()}
    finally:
        store.close()


def execute_sql(root: Path, *statements: str) -> None:
    """Run SQL against the project's state directly, as someone bypassing mlspec would (SQLite or PostgreSQL)."""
    if Project.open(root).settings.state.backend == "sqlite":
        db = sqlite3.connect(root / ".mlspec/state.db")
        for statement in statements:
            db.execute(statement)
        db.commit()
        db.close()
        return
    import psycopg

    from mlspec.state.postgres import default_schema

    with psycopg.connect(os.environ["MLSPEC_STATE_URL"], autocommit=True) as connection:
        connection.execute(f'SET search_path TO "{default_schema("demo")}"')
        # a superuser's session whose triggers do not fire: the append-only trigger stops anyone else
        connection.execute("SET session_replication_role = replica")
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The state backend the test runs against; PostgreSQL gets a fresh database through MLSPEC_STATE_URL."""
    if request.param == "postgres":
        monkeypatch.setenv("MLSPEC_STATE_URL", fresh_database("lifecycle"))
    return str(request.param)


@pytest.fixture
def project(tmp_path: Path, backend: str) -> Path:
    return make_project(tmp_path / "repo", backend)


def test_first_plan_creates_everything_then_apply_converges(project: Path, cli: Callable[..., CliResult]) -> None:
    plan = plan_environment(Project.open(project), "prod").plan
    assert plan is not None and plan.summary() == "Plan: 7 to add, 0 to change, 0 to destroy"
    order = [c.ref for c in plan.changes]
    assert order.index("DataSource/txns") < order.index("FeatureView/stats") < order.index("Deployment/fraud-api")
    result = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert result.code == 0 and "Apply complete: 7 applied" in result.out
    output = project / ".mlspec" / "prod" / "output"
    assert (output / "kubernetes" / "fraud-api.yaml").is_file() and (output / "kfp" / "fraud-detector.yaml").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()}
    again = cli("plan", "--env", "prod", "-C", str(project))
    assert "Plan: 0 to add, 0 to change, 0 to destroy" in again.out
    second = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert second.code == 0 and "Nothing to apply." in second.out
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file()} == mtimes, (
        "the second apply touched nothing"
    )


def test_updates_are_classified_and_explained(project: Path) -> None:
    apply_environment(Project.open(project), "prod")
    edit(project, "specs/all.yaml", "{name: txn_count, dtype: int64}", "{name: txn_count, dtype: int32}")
    edit(
        project,
        "specs/all.yaml",
        "label: {source: txns, field: is_fraud}",
        "label: {source: txns, field: is_fraud}\n  hyperparameters: {epochs: 30}",
    )
    edit(
        project,
        "specs/all.yaml",
        "metadata: {owner: team, name: customer}",
        "metadata: {owner: team-b, name: customer}",
    )
    plan = plan_environment(Project.open(project), "prod").plan
    assert plan is not None
    changes = {c.ref: c for c in plan.pending}
    view = changes["FeatureView/stats"]
    assert view.classification == "breaking" and view.fields[0].path == "spec.features[txn_count].dtype"
    assert any("changes type int64 -> int32" in r for r in view.reasons) and any("used by" in r for r in view.reasons)
    assert changes["TrainingPipeline/fraud-detector"].classification == "needs-retrain"
    assert changes["Entity/customer"].classification == "metadata"


def test_views_markdown_and_json(project: Path, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    markdown = cli("plan", "--env", "prod", "--format", "markdown", "-C", str(project)).out
    assert "**Plan: 7 to add, 0 to change, 0 to destroy**" in markdown and "<details>" in markdown
    data = json.loads(cli("plan", "--env", "prod", "--format", "json", "-C", str(project)).out)
    assert (
        data["schema_version"] == 2
        and "findings" in data
        and data["summary"]["create"] == 7
        and len(data["plan_hash"]) == 64
    )
    assert {"ref", "action", "classification", "fields", "reasons", "fingerprint", "spec", "artifacts"} <= set(
        data["changes"][0]
    )


def test_a_saved_plan_applies_exactly_and_a_stale_one_is_refused(
    project: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    assert cli("plan", "--env", "prod", "--out", str(saved), "-C", str(project)).code == 0
    edit(project, "specs/all.yaml", "ttl: 7d", "ttl: 8d")
    stale = cli("apply", str(saved), "-C", str(project))
    assert stale.code == 1 and "stale plan" in stale.err
    edit(project, "specs/all.yaml", "ttl: 8d", "ttl: 7d")
    assert cli("apply", str(saved), "-C", str(project)).code == 0
    again = cli("apply", str(saved), "-C", str(project))
    assert again.code == 1 and "stale plan" in again.err, "a saved plan applies once"
    tampered = json.loads(saved.read_text())
    tampered["changes"][0]["action"] = "delete"
    saved.write_text(json.dumps(tampered))
    assert "edited after it was made" in cli("apply", str(saved), "-C", str(project)).err


def test_state_changed_since_the_plan_makes_it_stale(
    project: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    cli("plan", "--env", "prod", "--out", str(saved), "-C", str(project))
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    result = cli("apply", str(saved), "-C", str(project))
    assert result.code == 1 and "state changed since it was made" in result.err


def test_prune_no_prune_and_allow_destroy(project: Path, cli: Callable[..., CliResult]) -> None:
    apply_environment(Project.open(project), "prod")
    text = (project / "specs/all.yaml").read_text()
    docs = [d for d in text.split("---\n") if "kind: Deployment" not in d]
    (project / "specs/all.yaml").write_text("---\n".join(docs))
    assert (
        "Plan: 0 to add, 1 to change, 0 to destroy"
        in cli("plan", "--env", "prod", "--no-prune", "-C", str(project)).out
    )
    refused = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert refused.code == 1 and "deletes production Deployment(s) Deployment/fraud-api" in refused.err
    done = cli("apply", "--env", "prod", "--auto-approve", "--allow-destroy", "-C", str(project))
    assert done.code == 0 and "Deployment/fraud-api" not in applied_state(project)
    assert not (project / ".mlspec/prod/output/kubernetes/fraud-api.yaml").exists()


def test_a_second_apply_waits_for_or_names_the_lock_holder(project: Path, cli: Callable[..., CliResult]) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mlspec.app.paths import state_store; from mlspec.app.project import Project; "
         "s = state_store(Project.open(__import__('pathlib').Path(sys.argv[1]))); "
         "s.acquire('prod', 'alice@bank.ae', 'apply'); print('locked', flush=True); time.sleep(60)", str(project)],
        stdout=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        blocked = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
        assert blocked.code == 1 and "locked by alice@bank.ae" in blocked.err and f"pid {holder.pid}" in blocked.err
        assert "mlspec state unlock --env prod" in blocked.err
        listed = cli("state", "list", "-C", str(project)).out
        assert "held by alice@bank.ae" in listed
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next apply takes it over
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0


def test_unlock_breaks_a_lock(project: Path, cli: Callable[..., CliResult]) -> None:
    store = state_store(Project.open(project))
    store.acquire("prod", "bob", "apply")
    store.close()
    assert "removed the lock of bob" in cli("state", "unlock", "--env", "prod", "-C", str(project)).out


def test_a_failure_skips_dependants_and_records_exactly_what_applied(
    project: Path, cli: Callable[..., CliResult]
) -> None:
    blocker = project / ".mlspec/prod/output/feast"  # the Environment's shared feast repo cannot be written
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder must go")
    blocker_k8s = project / ".mlspec/prod/output/kfp"
    blocker_k8s.write_text("a file where a folder must go")
    result = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert result.code == 1
    assert "✗ TrainingPipeline/fraud-detector: failed" in result.out and "all.yaml:" in result.out
    assert "✗ Deployment/fraud-api: skipped: depends on failed TrainingPipeline/fraud-detector" in result.out
    state = applied_state(project)
    assert "TrainingPipeline/fraud-detector" not in state and "Deployment/fraud-api" not in state
    assert {"DataSource/txns", "Entity/customer", "FeatureView/stats", "FeatureService/fraud-features"} <= set(state)
    blocker.unlink()
    blocker_k8s.unlink()
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    assert len(applied_state(project)) == 7


@pytest.mark.parametrize(
    "failpoint", [f"apply.after_target={n}" for n in range(1, 8)] + ["apply.after_state=3", "apply.before_target=5"]
)
def test_a_crash_at_any_step_leaves_true_state_and_the_next_apply_converges(project: Path, failpoint: str) -> None:
    crashed = run_mlspec(
        "apply", "--env", "prod", "--auto-approve", "-C", str(project), env={"MLSPEC_FAILPOINTS": failpoint}
    )
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr  # SIGKILL
    before = applied_state(project)
    store = state_store(Project.open(project))
    try:
        records = store.audit("prod")
        assert verify_chain(records) == []
        recorded = {r.record["ref"] for r in records if r.record.get("type") == "change"}
        assert recorded == set(before), "state and audit are written together: both or neither"
    finally:
        store.close()
    recovered = run_mlspec("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert len(applied_state(project)) == 7
    store = state_store(Project.open(project))
    try:
        applies = [r.record["ref"] for r in store.audit("prod") if r.record.get("type") == "change"]
    finally:
        store.close()
    assert sorted(applies) == sorted(set(applies)), "nothing was applied twice"
    assert "Plan: 0 to add, 0 to change, 0 to destroy" in run_mlspec("plan", "--env", "prod", "-C", str(project)).stdout


def test_drift_is_reported_and_repaired(project: Path, cli: Callable[..., CliResult]) -> None:
    apply_environment(Project.open(project), "prod")
    target = project / ".mlspec/prod/output/kubernetes/fraud-api.yaml"
    target.write_text(target.read_text().replace("minReplicas: 1", "minReplicas: 9"))
    report = cli("diff", "--env", "prod", "-C", str(project))
    assert (
        report.code == 1
        and "~ Deployment/fraud-api" in report.out
        and "kubernetes/fraud-api.yaml: changed" in report.out
    )
    assert "Plan: 0 to add, 0 to change" in cli("plan", "--env", "prod", "-C", str(project)).out, "plan trusts state"
    refreshed = cli("plan", "--env", "prod", "--refresh", "-C", str(project))
    assert "drift: the target no longer matches" in refreshed.out
    assert cli("apply", "--env", "prod", "--auto-approve", "--refresh", "-C", str(project)).code == 0
    assert "minReplicas: 1" in target.read_text()
    assert cli("diff", "--env", "prod", "-C", str(project)).code == 0


@pytest.mark.parametrize("tamper", ["edit", "remove", "reorder"])
def test_audit_verify_detects_tampering(project: Path, cli: Callable[..., CliResult], tamper: str) -> None:
    apply_environment(Project.open(project), "prod")
    assert "intact" in cli("audit", "verify", "-C", str(project)).out
    if tamper == "edit":
        execute_sql(project, "UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    elif tamper == "remove":
        execute_sql(project, "DELETE FROM audit WHERE seq = 3")
    else:
        execute_sql(
            project,
            "UPDATE audit SET seq = -1 WHERE seq = 2",
            "UPDATE audit SET seq = 2 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = -1",
        )
    result = cli("audit", "verify", "-C", str(project))
    assert result.code == 1
    expected = {"edit": "record 3: its content does not match its hash (edited)", "remove": "expected record 3 here",
                "reorder": "does not follow the record before it"}[tamper]  # fmt: skip
    assert expected in result.out


def sign_checkpoints(project: Path) -> None:
    """Give prod an audit signing key file (its kms:// key has no signing provider here)."""
    edit(
        project,
        "environments/prod.yaml",
        "kms_key: kms://prod,",
        "kms_key: kms://prod, signing_key: file://keys/audit,",
    )


def rehash_from(root: Path, first: int, actor: str = "mallory") -> None:
    """Rewrite the chain from record ``first`` on with fresh hashes, as someone who knows the rule would."""
    from mlspec.state.base import record_hash

    store = state_store(Project.open(root))
    try:
        records = store.audit()
    finally:
        store.close()
    prev = records[first - 2].hash if first > 1 else "0" * 64
    statements = []
    for entry in records[first - 1 :]:
        fields = {"seq": entry.seq, "environment": entry.environment, "at": entry.at, "actor": actor,
                  "revision": entry.revision, "plan_hash": entry.plan_hash, "record": entry.record}  # fmt: skip
        new = record_hash(prev, fields)
        statements.append(f"UPDATE audit SET actor = '{actor}', prev_hash = '{prev}', hash = '{new}' "
                          f"WHERE seq = {entry.seq}")  # fmt: skip
        prev = new
    execute_sql(root, *statements)


@pytest.mark.parametrize("tamper", ["truncate", "rewrite", "rewrite-tail", "empty", "forged-checkpoint",
                                    "foreign-key", "edited-checkpoint"])  # fmt: skip
def test_audit_verify_detects_what_the_chain_alone_cannot(
    project: Path, cli: Callable[..., CliResult], tamper: str
) -> None:
    """Signed checkpoints outside the database: a cut tail, a chain re-hashed from some record on, an emptied
    state and a forged or edited checkpoint are each reported, with what happened."""
    import base64

    from mlspec.app.audit_trail import checkpoint_file
    from mlspec.state.checkpoint import Checkpoint

    sign_checkpoints(project)
    apply_environment(Project.open(project), "prod")
    clean = cli("audit", "verify", "-C", str(project))
    assert clean.code == 0 and "intact" in clean.out and "! " not in clean.out, clean.out
    store = state_store(Project.open(project))
    try:
        count = len(store.audit())
    finally:
        store.close()
    checkpoints = checkpoint_file(Project.open(project))
    if tamper == "truncate":
        execute_sql(project, f"DELETE FROM audit WHERE seq > {count - 3}")
        expected = f"records {count - 2}-{count} were removed from its end (truncated)"
    elif tamper in ("rewrite", "rewrite-tail"):
        rehash_from(project, 2 if tamper == "rewrite" else count)
        expected = "is not the one the checkpoint of prod at" if tamper == "rewrite" else "the chain was rewritten"
    elif tamper == "empty":
        execute_sql(project, "DELETE FROM audit", "DELETE FROM resources", "DELETE FROM serials")
        expected = "the state was emptied or restored from an older copy"
    else:
        lines = checkpoints.read_text().splitlines()
        last = json.loads(lines[-1])
        if tamper == "edited-checkpoint":
            last["count"] += 5  # claims records that never were
            expected = "does not verify: its signature does not match its content (edited)"
        else:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            from mlspec.edge.signing import fingerprint

            forger = Ed25519PrivateKey.generate()
            raw = forger.public_key().public_bytes_raw()
            forged = Checkpoint(**{**last, "count": 1, "signature": ""})
            if tamper == "foreign-key":
                forged = Checkpoint(**{**forged.to_dict(), "key": fingerprint(raw)})
            last = forged.signed(forger.sign(forged.payload())).to_dict()
            expected = ("does not verify" if tamper == "forged-checkpoint"
                        else "not the environment's signing key")  # fmt: skip
        checkpoints.write_text("\n".join([*lines, json.dumps(last)]) + "\n")
        assert base64.b64decode(last["signature"])
    result = cli("audit", "verify", "-C", str(project))
    assert result.code == 1, result.out
    assert expected in result.out, result.out


def test_checkpoints_kept_on_the_git_branch_catch_a_truncation_with_the_file_copy_gone(
    project: Path, cli: Callable[..., CliResult]
) -> None:
    from mlspec.app.audit_trail import checkpoint_file

    sign_checkpoints(project)
    git = ["git", "-C", str(project), "-c", "user.email=t@bank.ae", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / ".gitignore").write_text(".mlspec/\nkeys/\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    # CI keeps its state file on the same branch: a later checkpoint keeps it
    blob = subprocess.run([*git, "hash-object", "-w", "--stdin"], input="state", text=True, capture_output=True,
                          check=True).stdout.strip()  # fmt: skip
    parent = subprocess.run([*git, "rev-parse", "mlspec-audit"], text=True, capture_output=True, check=True).stdout
    ls = subprocess.run([*git, "ls-tree", "mlspec-audit"], text=True, capture_output=True, check=True).stdout
    listing = ls + f"100644 blob {blob}\tstate.db\n"
    tree = subprocess.run([*git, "mktree"], input=listing, text=True, capture_output=True, check=True).stdout.strip()
    commit = subprocess.run([*git, "commit-tree", tree, "-p", parent.strip(), "-m", "state"], text=True,
                            capture_output=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run([*git, "update-ref", "refs/heads/mlspec-audit", commit], check=True)
    edit(project, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    subprocess.run([*git, "commit", "-qam", "v2"], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    files = subprocess.run([*git, "ls-tree", "--name-only", "mlspec-audit"], text=True, capture_output=True,
                           check=True).stdout.split()  # fmt: skip
    assert files == ["checkpoints.jsonl", "state.db"]
    log = subprocess.run([*git, "log", "--format=%s", "mlspec-audit"], text=True, capture_output=True, check=True)
    assert log.stdout.count("audit checkpoint: prod") == 2, log.stdout
    status = subprocess.run([*git, "status", "--porcelain"], text=True, capture_output=True, check=True).stdout
    assert status == "", "checkpoints never touch HEAD, the index or the work tree"
    checkpoint_file(Project.open(project)).unlink()  # whoever cuts the log also removes the copy beside it
    execute_sql(project, "DELETE FROM audit WHERE seq > 3")
    result = cli("audit", "verify", "-C", str(project))
    assert result.code == 1 and "were removed from its end (truncated)" in result.out, result.out


def test_audit_export_is_checked_by_its_own_script_with_python_and_cryptography_only(
    project: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    sign_checkpoints(project)
    apply_environment(Project.open(project), "prod")
    out = tmp_path / "export"
    exported = cli("audit", "export", "--env", "prod", "-o", str(out), "-C", str(project))
    assert exported.code == 0 and "intact" in exported.out, exported.out
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl", "checkpoints.jsonl", "keys", "manifest.json",
                                                     "verify.py"]  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["intact"] and manifest["records"] == len((out / "audit.jsonl").read_text().splitlines())
    assert manifest["keys"]["prod"].startswith("sha256:") and (out / "keys" / "prod.pem").is_file()
    # the checker runs with the standard library and cryptography alone: no mlspec on its path
    script = [sys.executable, "-I", str(out / "verify.py")]
    checked = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert checked.returncode == 0 and "intact" in checked.stdout and "signed" in checked.stdout, checked.stderr
    records = (out / "audit.jsonl").read_text().splitlines()
    (out / "audit.jsonl").write_text("\n".join(records[:-2]) + "\n")  # the auditor's copy, cut short
    checked = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert checked.returncode == 1 and "(truncated)" in checked.stdout, checked.stdout
    edited = json.loads(records[1])
    edited["actor"] = "mallory"
    (out / "audit.jsonl").write_text("\n".join([records[0], json.dumps(edited), *records[2:]]) + "\n")
    checked = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert checked.returncode == 1 and "record 2: its content does not match its hash (edited)" in checked.stdout
    assert cli("audit", "export", "--env", "prod", "-o", str(out), "-C", str(project)).code == 2, "never overwrites"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # the append-only trigger is PostgreSQL's
def test_the_postgres_audit_table_refuses_updates_and_deletes(project: Path) -> None:
    import psycopg

    from mlspec.state.postgres import default_schema

    apply_environment(Project.open(project), "prod")
    with psycopg.connect(os.environ["MLSPEC_STATE_URL"], autocommit=True) as connection:
        connection.execute(f'SET search_path TO "{default_schema("demo")}"')
        for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit WHERE seq = 1", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                connection.execute(statement)  # type: ignore[arg-type]
        grants = connection.execute(
            "SELECT privilege_type FROM information_schema.role_table_grants "
            "WHERE table_schema = %s AND table_name = 'audit' AND grantee = current_user",
            (default_schema("demo"),),
        ).fetchall()
    assert {g[0] for g in grants} & {"UPDATE", "DELETE", "TRUNCATE"} == set(), grants


def test_audit_log_and_state_show(project: Path, cli: Callable[..., CliResult]) -> None:
    cli("apply", "--env", "prod", "--auto-approve", "--as", "ci@bank.ae", "-C", str(project))
    log = cli("audit", "log", "--env", "prod", "-C", str(project)).out
    assert "create DataSource/txns by ci@bank.ae" in log and "apply by ci@bank.ae" in log and "+7 ~0 -0" in log
    shown = json.loads(cli("state", "show", "--env", "prod", "Deployment/fraud-api", "-C", str(project)).out)
    assert shown["applied_by"] == "ci@bank.ae" and shown["artifacts"]["kubernetes/fraud-api.yaml"]


def test_apply_refuses_without_approval_off_a_terminal(project: Path) -> None:
    proc = run_mlspec("apply", "--env", "prod", "-C", str(project))
    assert proc.returncode == 2 and "pass --auto-approve" in proc.stderr


def test_apply_refuses_a_policy_deny(project: Path, cli: Callable[..., CliResult]) -> None:
    edit(project, "specs/all.yaml", "strategy: canary, steps: [10, 50, 100]", "strategy: direct")
    result = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert result.code == 1 and "policy finding(s) deny this change" in result.err
    assert applied_state(project) == {}


def test_rollback_to_a_git_revision(project: Path, cli: Callable[..., CliResult]) -> None:
    git = ["git", "-C", str(project), "-c", "user.email=t@bank.ae", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    v1 = applied_state(project)
    edit(project, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    subprocess.run([*git, "commit", "-qam", "v2"], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    assert applied_state(project) != v1
    result = cli("rollback", "--env", "prod", "--to", "HEAD~1", "--auto-approve", "-C", str(project))
    assert result.code == 0, result.out + result.err
    assert applied_state(project) == v1
    assert "rollback to HEAD~1" in cli("audit", "log", "--env", "prod", "-C", str(project)).out


def test_the_output_target_plans_what_it_would_write(project: Path) -> None:
    from mlspec.app.paths import output_dir
    from mlspec.targets.output_dir import OutputDirTarget

    result = plan_environment(Project.open(project), "prod")
    assert result.plan is not None and result.graph is not None
    target = OutputDirTarget(output_dir(Project.open(project), result.graph))
    deployment = next(c for c in result.plan.changes if c.ref == "Deployment/fraud-api")
    assert "write kubernetes/fraud-api.yaml" in target.plan(deployment, None)
    assert not (output_dir(Project.open(project), result.graph) / "kubernetes").exists(), "planning writes nothing"


def test_a_corrupt_state_file_is_a_clear_error(project: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend == "postgres":  # the PostgreSQL counterpart: a database that cannot be used
        url = os.environ["MLSPEC_STATE_URL"]
        monkeypatch.setenv("MLSPEC_STATE_URL", url.rsplit("/", 1)[0] + "/no_such_database")
        proc = run_mlspec("plan", "--env", "prod", "-C", str(project))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "cannot connect to the state database at 127.0.0.1:" in proc.stderr and "no_such_database" in proc.stderr
        monkeypatch.delenv("MLSPEC_STATE_URL")
        proc = run_mlspec("plan", "--env", "prod", "-C", str(project))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "the environment variable MLSPEC_STATE_URL is not set" in proc.stderr
        return
    state = project / ".mlspec" / "state.db"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"this is not sqlite" * 100)
    proc = run_mlspec("plan", "--env", "prod", "-C", str(project))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not usable: file is not a database" in proc.stderr and "restore it from a backup" in proc.stderr


def test_audit_answers_what_was_live_when(project: Path, cli: Callable[..., CliResult]) -> None:
    import datetime as dt

    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    edit(project, "specs/all.yaml", "model: {name: fraud-detector}", "model: {name: fraud-detector, alias: challenger}")
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    now = cli("audit", "live", "--env", "prod", "-C", str(project)).out
    assert "Deployment/fraud-api served fraud-detector@challenger" in now
    earlier = cli("audit", "live", "--env", "prod", "--at", before.isoformat(), "-C", str(project)).out
    assert "nothing was applied" in earlier
    store = state_store(Project.open(project))
    first = next(e for e in store.audit("prod") if e.record.get("type") == "apply")
    store.close()
    then = cli("audit", "live", "--env", "prod", "--at", first.at, "-C", str(project)).out
    assert "Deployment/fraud-api served fraud-detector@champion" in then


def test_a_renamed_resource_keeps_the_files_it_now_owns(project: Path, cli: Callable[..., CliResult]) -> None:
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    # the FeatureView's name changes: its old and new owner claim different paths, the shared feast repo moves on
    edit(
        project,
        "specs/all.yaml",
        "metadata: {owner: team, name: fraud-api}",
        "metadata: {owner: team, name: fraud-api-v2}",
    )
    assert cli("apply", "--env", "prod", "--auto-approve", "--allow-destroy", "-C", str(project)).code == 0
    assert (project / ".mlspec/prod/output/kubernetes/fraud-api-v2.yaml").is_file()
    assert cli("diff", "--env", "prod", "-C", str(project)).code == 0, "nothing applied was deleted by another change"


def test_a_saved_plan_without_its_hash_or_not_a_plan_is_refused(
    project: Path, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    cli("plan", "--env", "prod", "--out", str(saved), "-C", str(project))
    data = json.loads(saved.read_text())
    del data["plan_hash"]
    saved.write_text(json.dumps(data))
    assert "hash is missing or does not match" in cli("apply", str(saved), "-C", str(project)).err
    saved.write_text("[]")
    result = cli("apply", str(saved), "-C", str(project))
    assert result.code == 2 and "not a valid mlspec plan" in result.err


def test_a_corrupt_audit_record_is_reported_as_edited(project: Path, cli: Callable[..., CliResult]) -> None:
    apply_environment(Project.open(project), "prod")
    execute_sql(project, "UPDATE audit SET record = '{' WHERE seq = 2")
    result = cli("audit", "verify", "-C", str(project))
    assert result.code == 1 and "record 2: its content does not match its hash (edited)" in result.out


def test_rollback_writes_into_the_project_whatever_its_data_dir(project: Path, cli: Callable[..., CliResult]) -> None:
    edit(project, "environments/prod.yaml", "  targets:\n", "  data_dir: out/prod\n  targets:\n")
    git = ["git", "-C", str(project), "-c", "user.email=t@bank.ae", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    edit(project, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    subprocess.run([*git, "commit", "-qam", "v2"], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0
    assert cli("rollback", "--env", "prod", "--to", "HEAD~1", "--auto-approve", "-C", str(project)).code == 0
    assert "ttl=timedelta(seconds=604800)" in (project / "out/prod/output/feast/features.py").read_text()
    assert cli("diff", "--env", "prod", "-C", str(project)).code == 0


def test_shared_environments_apply_only_committed_specs(project: Path, cli: Callable[..., CliResult]) -> None:
    git = ["git", "-C", str(project), "-c", "user.email=t@bank.ae", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    edit(project, "specs/all.yaml", "ttl: 7d", "ttl: 14d")  # uncommitted
    refused = cli("apply", "--env", "prod", "--auto-approve", "-C", str(project))
    assert refused.code == 1 and "uncommitted changes" in refused.err and "--allow-dirty" in refused.err
    assert applied_state(project) == {}
    subprocess.run([*git, "checkout", "-q", "--", "."], check=True)
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(project)).code == 0  # .mlspec/ is not dirt
    store = state_store(Project.open(project))
    try:
        assert {r.revision for r in store.read("prod").resources.values()} == {head}
        assert next(e for e in store.audit("prod") if e.record.get("type") == "apply").revision == head
    finally:
        store.close()
    edit(project, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    forced = cli("apply", "--env", "prod", "--auto-approve", "--allow-dirty", "-C", str(project))
    assert forced.code == 0, forced.err
    assert "+dirty" in cli("audit", "log", "--env", "prod", "-C", str(project)).out
