"""--changed-since: the files a branch changes map to resources, and the reduced run says exactly what a full run says.

One git history, built here: ``main`` is applied to both environments' state, then each
case branches off it (a spec edit, an environment edit, a policy, a deleted resource,
uncommitted and untracked work) while ``main`` moves on with a change of its own that
must not count. For each case and environment:

* the changed-since check and plan equal the full check and plan filtered to the affected set;
* the affected set is sound: every pending change of the full plan (state = the merge
  base) and every finding that differs from the merge base's falls inside it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlspec.app.project import Project
from mlspec.gitops.changes import affected, changed_files
from tests.conftest import MINIMAL, CliResult, recorded_images, write_files

PROJECT = "apiVersion: mlspec/v1\nkind: Project\nmetadata: {name: demo, owner: platform}\nspec: {specs: [specs], environments: environments}\n"
PROD = """
apiVersion: mlspec/v1
kind: Environment
metadata: {name: prod, owner: platform}
spec:
  tier: production
  region: uae-north
  data_residency: {allowed_regions: [uae-north, uae-central]}
  encryption: {kms_key: kms://prod, tls: required}
  identity: {issuer: "https://login.example.com/bank/v2.0"}
  targets:
    kubernetes: {namespace: ml-prod}
    serving: kserve
    images: {registry: registry.test/ml}
    registry: {artifact_store: {uri: "s3://models-prod", region: uae-north}}
"""
DEV = """
apiVersion: mlspec/v1
kind: Environment
metadata: {name: dev, owner: platform}
spec:
  tier: development
  region: uae-north
  data_residency: {allowed_regions: [uae-north, uae-central]}
  encryption: {kms_key: kms://dev}
  identity: {issuer: "https://login.example.com/bank/v2.0"}
  targets:
    kubernetes: {namespace: ml-dev}
    serving: kserve
    images: {registry: registry.test/ml}
    registry: {artifact_store: {uri: "s3://models-dev", region: uae-north}}
"""
EVENTS = """
apiVersion: mlspec/v1
kind: DataSource
metadata: {name: events, owner: web}
spec:
  type: file
  path: data/events.parquet
  timestamp_field: event_ts
  region: uae-north
  classification: internal
  encryption: {at_rest: true, kms_key: kms://web}
"""
CLICKS = EVENTS.replace("name: events", "name: clicks").replace("events.parquet", "clicks.parquet")
WARN_POLICY = """
package mlspec.policies.custom

import rego.v1

warn contains {
	"id": "custom.description",
	"path": "metadata",
	"message": sprintf("%s has no description", [input.resource.ref]),
	"fix": "add metadata.description",
} if {
	object.get(input.resource.metadata, "description", null) == null
}
"""
ENVS = ("dev", "prod")
ALL_PROD = {
    "DataSource/txns", "DataSource/events", "Entity/customer", "FeatureView/stats",
    "FeatureService/fraud-features", "TrainingPipeline/fraud-detector", "Deployment/fraud-api", "Environment/prod",
}  # fmt: skip


def spec(kind: str) -> str:
    text = MINIMAL[kind].strip("\n")
    import textwrap

    text = textwrap.dedent(text)
    return text if "owner:" in text else text.replace("metadata: {name: ", "metadata: {owner: team, name: ")


def make_repo(root: Path) -> Path:
    """A small platform in git, on branch main: one file per part of the pipeline, two environments."""
    training = spec("TrainingPipeline").replace(
        "architecture: {type: mlp, hidden: [16]}",
        "architecture: {type: mlp, hidden: [16]}\n  evaluation: {gates: {auc: '>= 0.8'}, explainability: true}"
        "\n  register: {tags: {use_case: fraud}}",
    )
    write_files(
        root,
        {
            "mlspec.yaml": PROJECT,
            "README.md": "# demo\n",
            ".gitignore": ".mlspec/\n",
            "specs/sources.yaml": spec("DataSource") + "\n---\n" + spec("Entity") + "\n",
            "specs/features.yaml": spec("FeatureView") + "\n---\n" + spec("FeatureService") + "\n",
            "specs/training.yaml": training + "\n",
            "specs/serving.yaml": spec("Deployment") + "\n",
            "specs/events.yaml": EVENTS,
            "environments/prod.yaml": PROD,
            "environments/dev.yaml": DEV,
            "policies/.keep": "",
            "images.lock.json": recorded_images("registry.test/ml"),
        },
    )
    git(root, "init", "-q", "-b", "main")
    commit(root, "main")
    return root


def git(root: Path, *args: str) -> str:
    cmd = ["git", "-C", str(root), "-c", "user.email=t@bank.ae", "-c", "user.name=t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def edit(root: Path, path: str, old: str, new: str) -> None:
    target = root / path
    text = target.read_text()
    assert old in text, (path, old)
    target.write_text(text.replace(old, new))


def findings_of(cli: Callable[..., CliResult], root: Path, *extra: str) -> list[dict[str, Any]]:
    result = cli("check", "--format", "json", "-C", str(root), *extra)
    data: list[dict[str, Any]] = json.loads(result.out)["findings"]
    return data


def plan_changes(cli: Callable[..., CliResult], root: Path, env: str, *extra: str) -> list[dict[str, Any]]:
    result = cli("plan", "--env", env, "--format", "json", "-C", str(root), *extra)
    document = json.loads(result.out)
    # plan exits 1 exactly when a finding it shows would make apply refuse it
    refused = any(f["severity"] == "deny" and f["status"] == "failed" for f in document["findings"])
    assert result.code == (1 if refused else 0), result.out + result.err
    data: list[dict[str, Any]] = document["changes"]
    return data


def affected_sets(root: Path) -> dict[str, frozenset[str]]:
    project = Project.open(root)
    changes = changed_files(project, "main")
    out = {}
    for env in ENVS:
        graph = project.resolve(env).graph
        assert graph is not None
        out[env] = affected(graph, changes)
    return out


# Each case edits the branch; the dict says what must be affected per environment (None: the whole environment).
def case_spec(root: Path) -> None:
    edit(root, "specs/features.yaml", "ttl: 7d", "ttl: 14d")
    commit(root, "longer ttl")
    edit(root, "specs/serving.yaml", "steps: [10, 50, 100]", "steps: [5, 50, 100]")
    commit(root, "gentler canary")


def case_environment(root: Path) -> None:
    edit(root, "environments/dev.yaml", "namespace: ml-dev", "namespace: ml-dev2")
    commit(root, "dev namespace")


def case_policy(root: Path) -> None:
    write_files(root, {"policies/custom.rego": WARN_POLICY})
    commit(root, "descriptions wanted")


def case_deleted(root: Path) -> None:
    (root / "specs/events.yaml").unlink()
    commit(root, "events are gone")


def case_working_tree(root: Path) -> None:
    edit(root, "specs/serving.yaml", "strategy: canary, steps: [10, 50, 100]", "strategy: direct")  # prod denies it
    write_files(root, {"specs/clicks.yaml": CLICKS})  # untracked


STAGES = ("DataSource/txns", "Entity/customer", "FeatureView/stats", "FeatureService/fraud-features")
DOWNSTREAM = {"TrainingPipeline/fraud-detector", "Deployment/fraud-api"}
CASES: dict[str, tuple[Callable[[Path], None], dict[str, set[str] | None]]] = {
    "spec": (
        case_spec,
        {
            env: {"FeatureView/stats", "FeatureService/fraud-features", *DOWNSTREAM, f"Environment/{env}"}
            for env in ENVS
        },
    ),
    "environment": (case_environment, {"dev": None, "prod": set()}),
    "policy": (case_policy, {"dev": None, "prod": None}),
    "deleted": (case_deleted, {env: {"DataSource/events", f"Environment/{env}"} for env in ENVS}),
    "working-tree": (
        case_working_tree,
        {env: {"Deployment/fraud-api", "DataSource/clicks", f"Environment/{env}"} for env in ENVS},
    ),
}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, list[dict[str, Any]]]]]:
    """The repository applied to both environments at tag ``base``; main has moved on since."""
    from mlspec.app.applying import apply_environment
    from mlspec.app.options import ApplyOptions

    root = make_repo(tmp_path_factory.mktemp("changed") / "repo")
    project = Project.open(root)
    for env in ENVS:
        _, applied = apply_environment(project, env, ApplyOptions(engines=False))
        assert applied is not None and applied.ok
    result = project.check()
    base = {env: [_finding_key(f) for f in result.findings if f.environment == env] for env in ENVS}
    git(root, "tag", "base")
    # main moves on after the branches below leave it: that change is never a branch's
    edit(root, "README.md", "# demo", "# demo platform")
    edit(root, "specs/sources.yaml", "value_type: int64}", "value_type: int64}  # the key")
    commit(root, "main moves on")
    yield root, base


def _finding_key(f: Any) -> dict[str, Any]:
    return {"policy": f.policy, "resource": f.resource, "environment": f.environment, "message": f.message}


@pytest.mark.parametrize("case", list(CASES))
def test_changed_since_equals_the_filtered_full_run(
    case: str, history: tuple[Path, dict[str, list[dict[str, Any]]]], cli: Callable[..., CliResult]
) -> None:
    root, base_findings = history
    make, expected = CASES[case]
    git(root, "checkout", "-q", "-f", "-B", f"case-{case}", "base")
    try:
        make(root)
        scope = affected_sets(root)
        project = Project.open(root)
        full = findings_of(cli, root, "--base", "main")  # judged by the base's checks, as --changed-since is
        reduced = findings_of(cli, root, "--changed-since", "main")
        for env in ENVS:
            graph = project.resolve(env).graph
            assert graph is not None
            want = expected[env]
            everything = {*graph.order, f"Environment/{env}"}
            assert scope[env] >= (everything if want is None else want), (env, sorted(scope[env]))
            if want is not None:  # nothing beyond what the case touches
                assert scope[env] == want, (env, sorted(scope[env]))
            assert "Entity/customer" not in scope[env] or want is None  # main's own change never counts

            # equivalence: the reduced run is the full run filtered to the affected set, byte for byte
            full_env = [f for f in full if f["environment"] == env]
            assert [f for f in reduced if f["environment"] == env] == [
                f for f in full_env if f["resource"] in scope[env]
            ]
            full_plan = plan_changes(cli, root, env)
            reduced_plan = plan_changes(cli, root, env, "--changed-since", "main")
            assert reduced_plan == [c for c in full_plan if c["ref"] in scope[env]]

            # soundness: nothing the full run reports as changed falls outside the affected set
            pending = {c["ref"] for c in full_plan if c["action"] != "noop"}
            assert pending <= scope[env], (env, sorted(pending - scope[env]))
            now = [{k: f[k] for k in ("policy", "resource", "environment", "message")} for f in full_env]
            differ = [f for f in now if f not in base_findings[env]] + [f for f in base_findings[env] if f not in now]
            assert {f["resource"] for f in differ} <= scope[env], differ
        if case == "deleted":
            prod_plan = plan_changes(cli, root, "prod", "--changed-since", "main")
            assert {"ref": "DataSource/events", "action": "delete"}.items() <= prod_plan[-1].items()
        if case == "working-tree":
            assert any(f["policy"].startswith("rollout") and f["resource"] == "Deployment/fraud-api" for f in reduced)
        if case == "policy":  # the change's own policy does not judge it yet; that it adds one is a finding
            assert not any(f["policy"] == "custom.description" for f in reduced)
            assert {f["environment"] for f in reduced if f["policy"] == "governance.gate-changed"} == set(ENVS)
    finally:
        git(root, "reset", "-q", "--hard")
        git(root, "clean", "-qfd", "-e", ".mlspec")
        git(root, "checkout", "-q", "-f", "main")


def test_text_reports_name_the_scope(
    history: tuple[Path, dict[str, list[dict[str, Any]]]], cli: Callable[..., CliResult]
) -> None:
    root, _ = history
    git(root, "checkout", "-q", "-B", "scope-text", "main")
    try:
        edit(root, "specs/training.yaml", "hidden: [16]", "hidden: [32]")
        commit(root, "wider")
        result = cli("check", "-C", str(root), "--changed-since", "main")
        assert result.code == 0 and "changed since main (merge base " in result.out
        plan = cli("plan", "--env", "prod", "-C", str(root), "--changed-since", "main")
        assert plan.code == 0, plan.out + plan.err
        assert "TrainingPipeline/fraud-detector" in plan.out and "DataSource/txns" not in plan.out
        assert "Plan: 0 to add, 2 to change, 0 to destroy" in plan.out  # the pipeline and the environment
    finally:
        git(root, "checkout", "-q", "-f", "main")


def test_nothing_changed_says_so_and_passes(
    history: tuple[Path, dict[str, list[dict[str, Any]]]], cli: Callable[..., CliResult]
) -> None:
    root, _ = history
    git(root, "checkout", "-q", "-B", "docs-only", "main")
    try:
        edit(root, "README.md", "# demo", "# the demo")
        commit(root, "docs")
        (root / "notes.txt").write_text("untracked, not a spec\n")
        for args in (("check",), ("plan", "--env", "prod")):
            result = cli(*args, "-C", str(root), "--changed-since", "main")
            assert result.code == 0 and "no spec changes since main" in result.out, result.out
        # a change to one environment leaves the other with nothing to plan
        edit(root, "environments/dev.yaml", "namespace: ml-dev", "namespace: ml-dev3")
        result = cli("plan", "--env", "prod", "-C", str(root), "--changed-since", "main")
        assert result.code == 0 and "no spec changes since main in environment prod" in result.out
        assert changed_files(Project.open(root), "main").relevant
    finally:
        (root / "notes.txt").unlink()
        git(root, "checkout", "-q", "-f", "main")


def test_unknown_ref_is_a_usage_error(
    history: tuple[Path, dict[str, list[dict[str, Any]]]], cli: Callable[..., CliResult]
) -> None:
    root, _ = history
    for args in (("check",), ("plan", "--env", "prod"), ("comment", "--env", "prod")):
        result = cli(*args, "-C", str(root), "--changed-since", "no-such-branch")
        assert result.code == 2 and "unknown git ref 'no-such-branch'" in result.err, (args, result.err)


def test_out_is_refused_with_changed_since(
    history: tuple[Path, dict[str, list[dict[str, Any]]]], cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    root, _ = history
    result = cli("plan", "--env", "prod", "-C", str(root), "--changed-since", "main", "--out", str(tmp_path / "p.json"))
    assert result.code == 2 and "--out saves a whole plan" in result.err
