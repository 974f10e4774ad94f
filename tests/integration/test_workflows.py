"""The GitHub workflows of this repository and of `mlspec init`: actionlint-clean, gated, pinned, least privilege."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlspec import __version__
from mlspec.scaffold import scaffold
from tests.conftest import REPO

ACTIONLINT = Path(sys.executable).parent / "actionlint"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init") / "bank-ml"
    scaffold(root)
    return root


def workflow_files(root: Path) -> list[Path]:
    return sorted((root / ".github/workflows").glob("*.y*ml"))


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def test_actionlint_reports_nothing_for_this_repository_and_a_new_project(scaffolded: Path) -> None:
    files = [*workflow_files(REPO), *workflow_files(scaffolded)]
    assert len(files) >= 2
    proc = subprocess.run([str(ACTIONLINT), "-no-color", *map(str, files)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("where", ["repo", "scaffold"])
def test_pull_requests_are_checked_planned_and_commented_once(where: str, scaffolded: Path) -> None:
    path = (REPO if where == "repo" else scaffolded) / ".github/workflows/mlspec.yml"
    flow = load(path)
    assert "pull_request" in flow["on"] and flow["on"]["push"] == {"branches": ["main"]}
    jobs = flow["jobs"]
    check = "\n".join(s.get("run", "") for s in jobs["check"]["steps"])
    assert "mlspec check --format github" in check and "--format sarif" in check
    assert any("upload-sarif" in s.get("uses", "") for s in jobs["check"]["steps"])
    assert jobs["check"]["permissions"]["security-events"] == "write"
    assert any(s.get("run") == "mlspec policy test" for s in jobs["policy-test"]["steps"])
    plan = jobs["plan"]
    assert plan["if"] == "github.event_name == 'pull_request'"
    assert plan["permissions"] == {"contents": "read", "pull-requests": "write"}
    commenting = "\n".join(s.get("run", "") + s.get("with", {}).get("script", "") for s in plan["steps"])
    assert "mlspec comment --env dev --env staging --env prod" in commenting
    assert "<!-- mlspec:comment" in commenting and "updateComment" in commenting and "createComment" in commenting
    assert "github.paginate(github.rest.issues.listComments" in commenting


@pytest.mark.parametrize("where", ["repo", "scaffold"])
def test_main_applies_dev_then_gated_staging_and_production_never_overlapping(where: str, scaffolded: Path) -> None:
    path = (REPO if where == "repo" else scaffolded) / ".github/workflows/mlspec.yml"
    jobs = load(path)["jobs"]
    dev, staging, prod = jobs["apply-dev"], jobs["apply-staging"], jobs["apply-prod"]
    assert dev["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert set(dev["needs"]) == {"check", "policy-test"}
    assert staging["needs"] == ["apply-dev"] and prod["needs"] == ["apply-staging"]
    assert (staging["environment"], prod["environment"]) == ("staging", "production")
    groups = [job["concurrency"]["group"] for job in (dev, staging, prod)]
    assert len(set(groups)) == 3 and all(
        job["concurrency"]["cancel-in-progress"] is False for job in (dev, staging, prod)
    )
    for job, env in ((dev, "dev"), (staging, "staging"), (prod, "prod")):
        assert job["env"]["MLSPEC_ENV"] == env
        runs = [s.get("run", "") for s in job["steps"]]
        applied = runs.index('mlspec apply --env "$MLSPEC_ENV" --auto-approve')
        # state and checkpoints come from, and go back to, the mlspec-audit branch; never only the Actions cache
        assert "git show mlspec-audit:state.db > .mlspec/state.db" in runs[applied - 2]
        assert runs[applied - 1] == "mlspec audit verify", "a lost or tampered state stops before the apply"
        assert "git push --quiet origin refs/heads/mlspec-audit:refs/heads/mlspec-audit" in runs[applied + 1]
        assert job["steps"][applied + 1]["if"] == "always()"
        assert not any("actions/cache" in s.get("uses", "") for s in job["steps"])


@pytest.mark.parametrize("where", ["repo", "scaffold"])
def test_pinned_least_privilege_python_311_and_secrets_by_reference(where: str, scaffolded: Path) -> None:
    path = (REPO if where == "repo" else scaffolded) / ".github/workflows/mlspec.yml"
    text = "\n".join(x for x in path.read_text(encoding="utf-8").splitlines() if not x.lstrip().startswith("#"))
    flow = load(path)
    assert flow["permissions"] == {}
    assert flow["env"]["PYTHON_VERSION"] == "3.11"
    for name, job in flow["jobs"].items():
        assert "permissions" in job, name
        if name.startswith("apply-"):  # they push the mlspec-audit branch and prove who applies with an OIDC token
            assert job["permissions"] == {"contents": "write", "id-token": "write"}, name
        else:
            assert "write" not in str(job["permissions"]) or name in {"check", "plan"}, name
        for step in job["steps"]:
            if "uses" in step:
                assert SHA_PIN.match(step["uses"]), step["uses"]
    # GITOPS_TOKEN once per apply job; the rehearsal's registry login, only when set, and nothing else
    assert set(re.findall(r"secrets\.\w+", text)) == {
        "secrets.GITOPS_TOKEN",
        "secrets.REGISTRY_USERNAME",
        "secrets.REGISTRY_PASSWORD",
    }
    assert text.count("${{ secrets.GITOPS_TOKEN }}") == 3 and text.count("secrets.") == 5


def test_the_scaffold_is_the_same_workflow_installing_from_pypi(scaffolded: Path) -> None:
    mine = REPO / ".github/workflows/mlspec.yml"
    theirs = scaffolded / ".github/workflows/mlspec.yml"
    installs = {line.strip() for line in theirs.read_text().splitlines() if "pip install" in line}
    assert installs == {f'run: python -m pip install --disable-pip-version-check "mlspec=={__version__}"'}
    ours = {line.strip() for line in mine.read_text().splitlines() if "pip install" in line}
    assert ours == {
        'run: python -m pip install --disable-pip-version-check --constraint requirements/lock.txt --editable ".[all]"'
    }
    strip = re.compile(r"^\s*(#.*|run: python -m pip install.*)$")
    assert [x for x in mine.read_text().splitlines() if not strip.match(x)] == [
        x for x in theirs.read_text().splitlines() if not strip.match(x)
    ]


def test_this_repository_audits_its_pinned_dependencies_as_a_report() -> None:
    flow = load(REPO / ".github/workflows/dependency-audit.yml")
    assert "schedule" in flow["on"] and "requirements/lock.txt" in flow["on"]["pull_request"]["paths"]
    job = flow["jobs"]["audit"]
    assert job["permissions"] == {"contents": "read"}
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert "scripts/audit_dependencies.py -r requirements/lock.txt" in runs and "--strict" not in runs
    assert 'pip install "pip-audit==2.10.1"' in runs  # pinned, like everything else


@pytest.mark.parametrize("where", ["repo", "scaffold"])
def test_pull_requests_can_rehearse_an_environment_in_containers(where: str, scaffolded: Path) -> None:
    flow = load((REPO if where == "repo" else scaffolded) / ".github/workflows/mlspec.yml")
    job = flow["jobs"]["rehearse"]
    # opt-in per repository, pull requests only, read-only
    assert job["if"] == "github.event_name == 'pull_request' && vars.MLSPEC_REHEARSE_ENV != ''"
    assert job["permissions"] == {"contents": "read"} and job["env"]["MLSPEC_ENV"] == "${{ vars.MLSPEC_REHEARSE_ENV }}"
    assert {"redis", "postgres"} <= set(job["services"])
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "azurite-blob --blobHost 127.0.0.1" in runs and 'mlspec rehearse --env "$MLSPEC_ENV"' in runs
    # every stand-in the command reads is on loopback (the rehearsal refuses anything else)
    for variable in ("MLSPEC_REHEARSE_AZURE", "MLSPEC_REHEARSE_REDIS", "MLSPEC_REHEARSE_POSTGRES"):
        assert "127.0.0.1" in job["env"][variable], variable


@pytest.mark.parametrize("where", ["repo", "scaffold"])
def test_served_models_are_re_pinned_on_a_schedule_through_each_environments_gate(where: str, scaffolded: Path) -> None:
    root = REPO if where == "repo" else scaffolded
    main_flow = (root / ".github/workflows/mlspec.yml").read_text(encoding="utf-8")
    assert main_flow.count('mlspec render --env "$MLSPEC_ENV" --pin -o render') == 3, "every hand-off is pinned"
    flow = load(root / ".github/workflows/mlspec-pin.yml")
    assert flow["on"]["schedule"] == [{"cron": "*/15 * * * *"}] and "workflow_dispatch" in flow["on"]
    assert flow["permissions"] == {}
    job = flow["jobs"]["pin"]
    assert job["permissions"] == {"contents": "read"} and job["environment"] == "${{ matrix.environment }}"
    gates = {(m["env"], m["environment"]) for m in job["strategy"]["matrix"]["include"]}
    assert gates == {("dev", "dev"), ("staging", "staging"), ("prod", "production")}
    # never while the same environment is applied: the apply jobs' concurrency groups
    assert job["concurrency"] == {"group": "mlspec-apply-${{ matrix.env }}", "cancel-in-progress": False}
    main_jobs = load(root / ".github/workflows/mlspec.yml")["jobs"]
    assert main_jobs["apply-prod"]["concurrency"]["group"] == "mlspec-apply-prod"
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert (
        'mlspec render --env "$MLSPEC_ENV" --pin -o render' in runs
        and 'git push --quiet origin "HEAD:$revision"' in runs
    )
    for step in job["steps"]:
        if "uses" in step:
            assert SHA_PIN.match(step["uses"]), step["uses"]


def test_the_apply_jobs_state_steps_round_trip_through_the_branch_and_refuse_a_race(tmp_path: Path) -> None:
    """The restore and save steps of apply-dev, run by bash against a real origin: the state comes back as it was
    saved, the branch keeps the checkpoints file mlspec wrote, and a run that saves from an older branch is refused
    instead of overwriting the other run's state."""
    steps = load(REPO / ".github/workflows/mlspec.yml")["jobs"]["apply-dev"]["steps"]
    restore = next(s["run"] for s in steps if s.get("name", "").startswith("Restore state"))
    save = next(s["run"] for s in steps if s.get("name", "").startswith("Save state"))
    origin = tmp_path / "origin.git"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@bank.ae"]
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(origin), str(seed)], check=True, capture_output=True)
    subprocess.run([*git, "-C", str(seed), "commit", "-q", "--allow-empty", "-m", "specs"], check=True)
    subprocess.run(["git", "-C", str(seed), "push", "-q", "origin", "HEAD:main"], check=True)

    def runner(name: str) -> Path:  # actions/checkout with fetch-depth 0: every branch as origin/*
        folder = tmp_path / name
        subprocess.run(["git", "clone", "-q", "--branch", "main", str(origin), str(folder)], check=True)
        return folder

    def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLSPEC_ENV": "dev", "GITHUB_SHA": "abc"}
        return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False)

    first = runner("first")
    assert bash(restore, first).returncode == 0 and not (first / ".mlspec/state.db").exists()
    (first / ".mlspec").mkdir()
    (first / ".mlspec/state.db").write_bytes(b"state after run 1")
    subprocess.run([*git, "-C", str(first), "branch", "mlspec-audit", "main"], check=True)  # as if mlspec checkpointed
    (first / "checkpoints.jsonl").write_text("{}\n")
    blob = subprocess.run(["git", "-C", str(first), "hash-object", "-w", "checkpoints.jsonl"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    tree = subprocess.run(["git", "-C", str(first), "mktree"], input=f"100644 blob {blob}\tcheckpoints.jsonl\n",
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    commit = subprocess.run([*git, "-C", str(first), "commit-tree", tree, "-m", "checkpoint"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run(["git", "-C", str(first), "update-ref", "refs/heads/mlspec-audit", commit], check=True)
    saved = bash(save, first)
    assert saved.returncode == 0, saved.stderr
    stale = runner("stale")  # started before the next run saved
    second = runner("second")
    assert bash(restore, second).returncode == 0
    assert (second / ".mlspec/state.db").read_bytes() == b"state after run 1"
    listed = subprocess.run(["git", "-C", str(second), "ls-tree", "--name-only", "mlspec-audit"], capture_output=True,
                            text=True, check=True).stdout.split()  # fmt: skip
    assert listed == ["checkpoints.jsonl", "state.db"]
    (second / ".mlspec/state.db").write_bytes(b"state after run 2")
    assert bash(save, second).returncode == 0
    assert bash(restore, stale).returncode == 0
    (stale / ".mlspec/state.db").write_bytes(b"an older run's state")
    raced = bash(save, stale)
    assert raced.returncode != 0 and "rejected" in raced.stderr, raced.stderr
    third = runner("third")
    assert bash(restore, third).returncode == 0
    assert (third / ".mlspec/state.db").read_bytes() == b"state after run 2"
