"""mlspec promote: one commit that makes an environment run what another runs, in real git repositories."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlspec.app.paths import state_store
from mlspec.app.planning import plan_environment
from mlspec.app.project import Project
from mlspec.state.model import ResourceState
from tests.conftest import CliResult, copy_platform

STAGING_OVERRIDES = """  overrides:
    # staging tries a longer training run and a gentler canary
    - target: TrainingPipeline/fraud-detector
      patch: {spec: {hyperparameters: {epochs: 30}, resources: {gpu: {count: 2}}, schedule: "0 4 * * *"}}
    - target: Deployment/fraud-api
      patch: {spec: {rollout: {steps: [5, 25, 100]}, scaling: {max_replicas: 3}}}
"""


def git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.email=t@bank.ae", "-c", "user.name=t", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "platform").mkdir()
    root = copy_platform(tmp_path / "platform")
    staging = root / "environments/staging.yaml"  # its own overrides first, then the reference's
    staging.write_text(staging.read_text().replace("  overrides:\n", STAGING_OVERRIDES, 1))
    prod = root / "environments/prod.yaml"  # who may apply prod is test_access.py's subject, not this file's
    prod.write_text(prod.read_text().split("  # Who may apply here")[0])
    (root / ".gitignore").write_text(".mlspec/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "config", "user.email", "t@bank.ae")
    git(root, "config", "user.name", "t")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "platform")
    return root


def test_promotes_only_promotable_fields_on_a_new_branch_and_the_plan_shows_exactly_them(
    repo: Path, cli: Callable[..., CliResult]
) -> None:
    assert cli("apply", "--env", "prod", "--auto-approve", "-C", str(repo)).code == 0
    before = (repo / "environments/prod.yaml").read_text()
    head = git(repo, "rev-parse", "HEAD")
    result = cli("promote", "--from", "staging", "--to", "prod", "-C", str(repo))
    assert result.code == 0, result.err
    branch = f"promote/staging-to-prod-{head[:7]}"
    assert f"new branch {branch}" in result.out and "git push -u origin" in result.out
    assert "hyperparameters.epochs: 20 -> 30" in result.out
    assert "rollout.steps: [10, 50, 100] -> [5, 25, 100]" in result.out
    assert "TrainingPipeline/fraud-detector: spec.resources" in result.out  # listed as not promoted
    # the working tree and the current branch are untouched
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == ""
    assert (repo / "environments/prod.yaml").read_text() == before
    changed = git(repo, "diff", "--name-only", head, branch).split()
    assert changed == ["environments/prod.yaml"]
    git(repo, "checkout", "-q", branch)
    after = (repo / "environments/prod.yaml").read_text()
    kept = iter(after.splitlines())
    assert all(line in kept for line in before.splitlines())  # every line, comment and blank line survives
    overrides = yaml.safe_load(after)["spec"]["overrides"]
    existing = len(yaml.safe_load(before)["spec"]["overrides"])  # prod's own overrides stay first
    assert overrides[existing:] == [
        {"target": "Deployment/fraud-api", "patch": {"spec": {"rollout": {"steps": [5, 25, 100]}}}},
        {"target": "TrainingPipeline/fraud-detector", "patch": {"spec": {"hyperparameters": {"epochs": 30}}}},
    ]
    plan = plan_environment(Project.open(repo), "prod").plan
    assert plan is not None
    pending = {c.ref: c for c in plan.pending}
    assert set(pending) - {"Environment/prod"} == {"Deployment/fraud-api", "TrainingPipeline/fraud-detector"}
    assert {f.path.split("[")[0] for f in pending["Deployment/fraud-api"].fields} == {"spec.rollout.steps"}
    assert {f.path for f in pending["TrainingPipeline/fraud-detector"].fields} == {"spec.hyperparameters.epochs"}
    again = cli("promote", "--to", "prod", "-C", str(repo))
    assert again.code == 0 and "nothing to promote" in again.out


def test_pins_the_version_the_source_serves_and_replaces_an_earlier_promotion(
    repo: Path, cli: Callable[..., CliResult]
) -> None:
    store = state_store(Project.open(repo))
    try:
        served = ResourceState("Deployment/fraud-api", "f", {}, target_ids={"versions": "stable=7,canary=8"})
        store.put("staging", served)
    finally:
        store.close()
    first = cli("promote", "--to", "prod", "--commit", "fraud-api", "-C", str(repo))
    assert first.code == 0, first.err
    assert "model version 7, served in staging" in first.out and "model.version: (unset) -> 7" in first.out
    assert git(repo, "status", "--porcelain") == ""
    overrides = yaml.safe_load((repo / "environments/prod.yaml").read_text())["spec"]["overrides"]
    assert overrides[-1]["patch"] == {"spec": {"model": {"version": 7}, "rollout": {"steps": [5, 25, 100]}}}
    graph = Project.open(repo).resolve("prod").graph
    assert graph is not None and graph.resources["Deployment/fraud-api"].document.data["spec"]["model"]["version"] == 7
    # staging moves on: the new promotion replaces the earlier promoted entry instead of stacking one
    text = (repo / "environments/staging.yaml").read_text().replace("[5, 25, 100]", "[20, 100]")
    (repo / "environments/staging.yaml").write_text(text)
    git(repo, "commit", "-qam", "staging canary")
    second = cli("promote", "--to", "prod", "--commit", "--no-pin", "Deployment/fraud-api", "-C", str(repo))
    assert second.code == 0, second.err
    prod = (repo / "environments/prod.yaml").read_text()
    assert prod.count("promoted from staging") == 1 and "steps: [20, 100]" in prod
    assert "version" not in prod  # --no-pin: the pin goes with the entry it was in


def test_refuses_a_dirty_tree_a_wrong_source_and_unknown_names(repo: Path, cli: Callable[..., CliResult]) -> None:
    (repo / "specs/entities.yaml").write_text((repo / "specs/entities.yaml").read_text() + "\n# edit\n")
    dirty = cli("promote", "--to", "prod", "-C", str(repo))
    assert dirty.code == 2 and "uncommitted changes" in dirty.err and "stash" in dirty.err
    git(repo, "checkout", "-q", "--", ".")
    wrong = cli("promote", "--from", "dev", "--to", "prod", "-C", str(repo))
    assert wrong.code == 2 and "promoted from 'staging'" in wrong.err
    unknown = cli("promote", "--to", "prod", "no-such-thing", "-C", str(repo))
    assert unknown.code == 2 and "no resource named 'no-such-thing'" in unknown.err
    bound = cli("promote", "--to", "prod", "DataSource/fraud-labels", "-C", str(repo))
    assert bound.code == 2 and "environment-bound" in bound.err
    both = cli("promote", "--to", "prod", "--commit", "--branch", "x", "-C", str(repo))
    assert both.code == 2
    assert git(repo, "branch", "--list", "promote/*") == ""


def test_nothing_to_promote_exits_0_and_an_overrides_list_is_created_when_missing(
    repo: Path, cli: Callable[..., CliResult]
) -> None:
    nothing = cli("promote", "--from", "dev", "--to", "staging", "Deployment/churn-api", "-C", str(repo))
    assert nothing.code == 0 and "nothing to promote" in nothing.out
    dev = repo / "environments/dev.yaml"
    text = dev.read_text()
    dev.write_text(text[: text.index("  overrides:")] + "  promotion: {from: staging}\n")  # no overrides at all
    git(repo, "commit", "-qam", "dev follows staging, no overrides")
    created = cli("promote", "--to", "dev", "--commit", "-C", str(repo))
    assert created.code == 0, created.err
    spec = yaml.safe_load(dev.read_text())["spec"]
    assert spec["promotion"] == {"from": "staging"}
    assert [o["target"] for o in spec["overrides"]] == ["Deployment/fraud-api", "TrainingPipeline/fraud-detector"]
    assert Project.open(repo).resolve("dev").ok
    back = cli("promote", "--to", "staging", "-C", str(repo))
    assert back.code == 0 and "nothing to promote" in back.out


def test_the_version_to_pin_is_what_serves_now_not_what_was_last_applied(tmp_path: Path) -> None:
    from mlspec.gitops.promote import served_version

    root = copy_platform(tmp_path)
    project = Project.open(root)
    store = state_store(project)
    try:
        ref = "Deployment/fraud-api"
        applied = ResourceState(ref, "f", {}, {}, {"versions": "stable=1,canary=2"})
        store.put("staging", applied, ("ci", "abc", "p", {"type": "change", "ref": ref}))
        assert served_version(project, "staging", ref, "fraud-detector") == 1  # only state knows: its stable
        store.append_audit("staging", "ci", "abc", "", {"type": "apply", "serving": {ref: "fraud-detector/1"}})
        assert served_version(project, "staging", ref, "fraud-detector") == 1
        # the canary was promoted after the apply: the settled rollout's record is the truth
        store.append_audit(
            "staging", "ops", "abc", "", {"type": "rollout", "serving": {ref: "fraud-detector@champion (stable=2)"}}
        )
        assert served_version(project, "staging", ref, "fraud-detector") == 2
        assert served_version(project, "staging", "Deployment/churn-api", "churn-model") is None
    finally:
        store.close()
