"""The pull-based reconciler: a commit history driven cycle by cycle, drift, signed commits, stopping cleanly.

Real git repositories, real gpg; the environment is production on the output-folder target (fast).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.app.paths import state_store
from mlspec.app.project import Project
from mlspec.gitops.reconcile import CycleResult, Reconciler
from mlspec.state.base import verify_chain
from mlspec.state.model import AuditRecord
from tests.conftest import CliResult, gen_key
from tests.integration.test_lifecycle import edit, make_project

AUTHOR = ["-c", "user.email=dev@bank.ae", "-c", "user.name=dev", "-c", "commit.gpgsign=false"]


def git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(root), *AUTHOR, *args],
        capture_output=True, text=True, check=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    return proc.stdout.strip()


def commit(root: Path, message: str, *, key: str | None = None, gnupg: Path | None = None) -> str:
    git(root, "add", "-A")
    signing = ["-c", f"user.signingkey={key}", "commit", f"--gpg-sign={key}"] if key else ["commit"]
    git(root, *signing, "-qm", message, env={"GNUPGHOME": str(gnupg)} if gnupg else None)
    return git(root, "rev-parse", "HEAD")


def origin_repo(root: Path, reconcile: str = "") -> Path:
    """The platform repository the reconciler pulls from: make_project's platform, committed on main."""
    make_project(root)
    if reconcile:
        with (root / "environments/prod.yaml").open("a") as env:
            env.write(f"  reconcile: {reconcile}\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    return root


class Clone:
    """What the reconciler applied, read from the project in its clone."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "repo"
        self.output = self.root / ".mlspec/prod/output"

    def state(self) -> dict[str, tuple[str, str]]:
        store = state_store(Project.open(self.root))
        try:
            resources = store.read("prod").resources.items()
            return {ref: (json.dumps([r.spec, r.artifacts], sort_keys=True), r.revision) for ref, r in resources}
        finally:
            store.close()

    def audit(self) -> list[AuditRecord]:
        store = state_store(Project.open(self.root))
        try:
            records = store.audit("prod")
        finally:
            store.close()
        assert verify_chain(records) == []
        return records

    def events(self) -> list[dict[str, object]]:
        return [r.record for r in self.audit() if r.record.get("type") == "reconcile"]

    def head(self) -> str:
        return git(self.root, "rev-parse", "HEAD")


def contents(state: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Each applied resource's spec and artifact hashes, without the commit it came from."""
    return {ref: content for ref, (content, _) in state.items()}


def lines(result: CycleResult) -> list[str]:
    return [e.message for e in result.events]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return origin_repo(tmp_path / "origin", "{self_heal: true, interval: 1s}")


def test_a_commit_history_is_applied_refused_fixed_and_reverted(
    origin: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    work = tmp_path / "work"
    clone = Clone(work)
    once = ("reconcile", "--env", "prod", "--repo", str(origin), "--branch", "main", "--once", "--workdir", str(work))

    # (1) the initial specs are applied
    c1 = commit(origin, "initial platform")
    first = cli(*once)
    assert first.code == 0, first.out + first.err
    assert f"commit {c1[:12]}: applied 7 changes" in first.out and "in sync with main" in first.out
    assert {revision for _, revision in clone.state().values()} == {c1}
    assert (clone.output / "kubernetes/fraud-api.yaml").is_file()
    assert clone.events()[-1] == {**clone.events()[-1], "event": "applied", "commit": c1, "applied_changes": 7}
    assert json.loads((work / "status.json").read_text())["applied"] == c1

    # (2) a spec change is applied; state carries the commit
    edit(origin, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    c2 = commit(origin, "longer ttl")
    second = cli(*once)
    assert second.code == 0 and f"commit {c2[:12]}: applied" in second.out, second.out
    state2 = clone.state()
    assert state2["FeatureView/stats"][1] == c2 and state2["DataSource/txns"][1] == c1, "unchanged resources stay"
    assert "ttl=timedelta(seconds=1209600)" in (clone.output / "feast/features.py").read_text()
    applies = [r for r in clone.audit() if r.record.get("type") == "apply"]
    assert applies[-1].revision == c2

    # (3) a policy violation is refused, state unchanged, audited, and not retried
    edit(origin, "specs/all.yaml", "strategy: canary, steps: [10, 50, 100]", "strategy: direct")
    c3 = commit(origin, "ship it directly")
    third = cli(*once)
    assert third.code == 1
    assert f"commit {c3[:12]}: refused: 1 policy deny (rollout.no_direct_in_prod on Deployment/fraud-api" in third.out
    assert clone.state() == state2 and clone.head() == c2, "the environment stays on the last good commit"
    refusal = clone.events()[-1]
    assert refusal["event"] == "refused" and refusal["commit"] == c3
    assert refusal["findings"] == [
        {
            "policy": "rollout.no_direct_in_prod",
            "resource": "Deployment/fraud-api",
            "message": "production Deployment 'fraud-api' replaces its model directly, with no canary or analysis",
        }
    ]
    again = cli(*once)
    assert again.code == 1 and again.out.startswith(
        f"'prod' stays at {c2[:12]}; main is at refused commit {c3[:12]}: 1 policy deny"
    )
    assert [e["event"] for e in clone.events()].count("refused") == 1, "a refused commit is not retried"
    log = cli("audit", "log", "--env", "prod", "-C", str(clone.root)).out
    assert " prod reconcile by " in log and "refused: " in log and " prod apply by " in log, log

    # (4) the fix is applied
    edit(origin, "specs/all.yaml", "strategy: direct", "strategy: canary, steps: [20, 50, 100]")
    c4 = commit(origin, "canary after all")
    fourth = cli(*once)
    assert fourth.code == 0 and f"commit {c4[:12]}: applied " in fourth.out, fourth.out
    assert clone.state()["Deployment/fraud-api"][1] == c4 and contents(clone.state()) != contents(state2)

    # (5) reverting to step 2's specs brings back step 2's state
    git(origin, "revert", "--no-edit", "--no-commit", c4, c3)
    c5 = commit(origin, "revert to the longer-ttl platform")
    fifth = cli(*once)
    assert fifth.code == 0 and f"commit {c5[:12]}: applied" in fifth.out, fifth.out
    assert contents(clone.state()) == contents(state2)
    assert json.loads((work / "status.json").read_text())["applied"] == c5

    # drift: an edited and a deleted artifact are repaired on the next cycle
    served = clone.output / "kubernetes/fraud-api.yaml"
    before = served.read_text()
    served.write_text(before.replace("minReplicas: 1", "minReplicas: 9"))
    (clone.output / "kfp/fraud-detector.yaml").unlink()
    healed = cli(*once)
    assert healed.code == 0, healed.out
    assert "drift in Deployment/fraud-api: self-healed" in healed.out
    assert "drift in TrainingPipeline/fraud-detector: self-healed" in healed.out
    assert served.read_text() == before and (clone.output / "kfp/fraud-detector.yaml").is_file()
    assert clone.events()[-1]["event"] == "self-healed"
    quiet = cli(*once)
    assert quiet.code == 0 and quiet.out.strip() == f"'prod' in sync with main at {c5[:12]}"


def test_drift_is_only_reported_when_self_heal_is_off(tmp_path: Path) -> None:
    origin = origin_repo(tmp_path / "origin")  # production: self_heal defaults to off
    c1 = commit(origin, "initial platform")
    reconciler = Reconciler("prod", str(origin), "main", tmp_path / "work")
    assert reconciler.cycle().in_sync
    served = Clone(tmp_path / "work").output / "kubernetes/fraud-api.yaml"
    served.write_text(served.read_text().replace("minReplicas: 1", "minReplicas: 9"))
    result = Reconciler("prod", str(origin), "main", tmp_path / "work").cycle()
    assert lines(result) == ["drift in Deployment/fraud-api: reported (self_heal is off)"]
    assert not result.in_sync and result.drifted == ("Deployment/fraud-api",) and result.applied_commit == c1
    assert "minReplicas: 9" in served.read_text(), "reported, not repaired"
    record = Clone(tmp_path / "work").events()[-1]
    assert record["event"] == "drift" and record["action"] == "reported"
    assert record["resources"] == {"Deployment/fraud-api": "drift"}
    repeat = reconciler.cycle()
    assert repeat.events == () and repeat.drifted == ("Deployment/fraud-api",), "each drift is reported once"


def test_signed_commits_only_from_trusted_keys(tmp_path: Path, gnupg: Path) -> None:
    trusted = gen_key(gnupg, "Release Manager <release@bank.ae>")
    other = gen_key(gnupg, "Someone Else <someone@example.com>")
    origin = origin_repo(tmp_path / "origin", f"{{require_signed_commits: true, trusted_keys: [{trusted}]}}")
    work = tmp_path / "work"

    def cycle() -> CycleResult:
        return Reconciler("prod", str(origin), "main", work, gnupg_home=gnupg).cycle()

    c1 = commit(origin, "signed by the release manager", key=trusted, gnupg=gnupg)
    first = cycle()
    assert first.in_sync and lines(first) == [f"commit {c1[:12]}: applied 7 changes"]

    edit(origin, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    c2 = commit(origin, "unsigned")
    unsigned = cycle()
    assert lines(unsigned) == [
        f"commit {c2[:12]}: refused: not signed; 'prod' applies only commits signed by a trusted key"
    ]
    assert not unsigned.in_sync and unsigned.refused == c2 and unsigned.applied_commit == c1

    edit(origin, "specs/all.yaml", "ttl: 14d", "ttl: 21d")
    c3 = commit(origin, "signed by someone else", key=other, gnupg=gnupg)
    untrusted = cycle()
    assert lines(untrusted) == [
        f"commit {c3[:12]}: refused: signed by {other} (Someone Else <someone@example.com>), which is not a "
        "trusted key; 'prod' applies only commits signed by a trusted key"
    ]
    clone = Clone(work)
    assert {revision for _, revision in clone.state().values()} == {c1}
    refusals = [e for e in clone.events() if e["event"] == "refused"]
    assert [(e["commit"], e["signature"], e["signed_by"]) for e in refusals] == [
        (c2, "unsigned", ""),
        (c3, "untrusted", other),
    ]

    # an unsigned commit cannot switch the requirement off: the last applied commit's settings decide
    edit(origin, "environments/prod.yaml", "require_signed_commits: true", "require_signed_commits: false")
    c4 = commit(origin, "turn signing off, unsigned")
    assert cycle().refused == c4

    edit(origin, "environments/prod.yaml", "require_signed_commits: false", "require_signed_commits: true")
    c5 = commit(origin, "signed again", key=trusted, gnupg=gnupg)
    signed = cycle()
    assert signed.in_sync and lines(signed)[0].startswith(f"commit {c5[:12]}: applied ")
    assert clone.state()["FeatureView/stats"][1] == c5


def test_the_reconciler_settings_are_validated() -> None:
    from mlspec.spec.environment import Reconcile

    with pytest.raises(ValueError, match="needs at least one trusted key"):
        Reconcile(require_signed_commits=True)
    with pytest.raises(ValueError, match="pattern"):
        Reconcile(trusted_keys=["not-a-fingerprint"])
    assert Reconcile(trusted_keys=["A" * 40]).interval == "60s"


def test_sigterm_stops_the_loop_cleanly(origin: Path, tmp_path: Path) -> None:
    c1 = commit(origin, "initial platform")
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlspec", "reconcile", "--env", "prod", "--repo", str(origin), "--interval", "0.2",
         "--workdir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        status = work / "status.json"
        while time.monotonic() < deadline and proc.poll() is None:
            if status.is_file() and json.loads(status.read_text()).get("applied") == c1:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)  # a few idle cycles
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert time.monotonic() - started < 10
    assert f"commit {c1[:12]}: applied 7 changes" in out and out.rstrip().endswith("stopped")
    assert "SIGTERM: stopping after the current step" in err
    assert Clone(work).state(), "the apply finished and was recorded"


def test_a_failed_apply_is_retried_with_backoff_until_it_lands(origin: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    commit(origin, "initial platform")

    def cycle() -> CycleResult:
        return Reconciler("prod", str(origin), "main", work, backoff_base=1.0, backoff_cap=3.0).cycle()

    assert cycle().in_sync
    clone = Clone(work)
    shutil.rmtree(clone.output / "kfp")
    (clone.output / "kfp").write_text("a file where a folder must go")  # the target cannot write the pipeline
    edit(origin, "specs/all.yaml", "ttl: 7d", "ttl: 14d")
    c2 = commit(origin, "longer ttl")
    delays = []
    for _ in range(3):
        result = cycle()
        assert result.failed and not result.in_sync and result.applied_commit != c2
        assert lines(result)[0].startswith(f"commit {c2[:12]}: apply failed: ")
        delays.append(result.next_delay)
    assert delays == [1.0, 2.0, 3.0], "exponential, capped"
    assert [e["event"] for e in clone.events()][-3:] == ["failed"] * 3
    assert json.loads((work / "status.json").read_text())["failures"] == 3
    (clone.output / "kfp").unlink()
    landed = cycle()
    assert landed.in_sync and lines(landed)[0].startswith(f"commit {c2[:12]}: applied ")
    assert landed.next_delay == 1.0, "back to the environment's reconcile.interval"
    assert clone.state()["FeatureView/stats"][1] == c2


def test_monitoring_runs_at_the_shortest_drift_schedule(tmp_path: Path) -> None:
    from mlspec.gitops.reconcile import monitoring_interval

    project = make_project(tmp_path / "repo")
    graph = Project.open(project).resolve("prod").graph
    assert graph is not None and monitoring_interval(graph) is None, "no Deployment is monitored"
    edit(
        project,
        "specs/all.yaml",
        "rollout: {strategy: canary",
        "monitoring: {drift: {schedule: 15m}}\n  rollout: {strategy: canary",
    )
    graph = Project.open(project).resolve("prod").graph
    assert graph is not None and monitoring_interval(graph) == 900.0
