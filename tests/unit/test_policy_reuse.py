"""Kept policy results equal a full evaluation: random single-spec edits of the generated bench repo, each checked
in every environment against an evaluation without any cache; an edit re-evaluates only the subjects that can see it;
a project policy that reads the graph makes every change re-evaluate everything."""

from __future__ import annotations

import datetime as dt
import random
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

import mlspec.policy.evaluate as evaluate
from mlspec.app.project import Project
from mlspec.policy.evaluate import check_graph
from mlspec.policy.reuse import reads_only_input

TODAY = dt.date(2026, 1, 1)
GENERATOR = Path(__file__).resolve().parents[2] / "bench" / "generate_specs.py"
PRODUCTS = 6

# (what the edit does, a pattern in one spec file, its replacement; {g} is another product's number)
EDITS: list[tuple[str, str, str]] = [
    ("source leaves the region", r"region: uae-north", "region: eu-west"),
    ("source becomes pii", r"classification: (confidential|internal)", "classification: pii"),
    ("source becomes public", r"classification: (pii|confidential)", "classification: public"),
    ("source unencrypted", r"at_rest: true", "at_rest: false"),
    ("resource loses its owner", r"owner: team-\d+, ", ""),
    ("view reads another source", r"source: src-(\d+)-(\d+)", r"source: src-\1-0"),
    ("view reads another product", r"source: src-(\d+)-(\d+)", "source: src-{g}-\\2"),
    ("service drops a view", r"    - view: view-(\d+)-2\n", ""),
    ("pipeline explains nothing", r"explainability: true", "explainability: false"),
    ("pipeline has no gates", r'gates: \{auc: ">= 0.8"\}', "gates: {}"),
    ("pipeline uses another service", r"features: service-(\d+)\n  label", "features: service-{g}\n  label"),
    ("deployment without auth", r"required: true, method: oidc", "required: false, method: none"),
    ("canary never completes", r"steps: \[10, 50, 100\]", "steps: [10, 50]"),
    ("deployment serves another model", r"model: \{name: model-(\d+)", "model: {name: model-{g}"),
    ("deployment on gpu without fallback", r"device: cpu", "device: gpu"),
    ("environment allows TLS off", r"tls: required", "tls: preferred"),
    ("environment moves", r"allowed_regions: \[[^\]]*\]", "allowed_regions: [eu-west]"),
]


def generated(root: Path, *, findings: bool = False) -> Path:
    """The bench's repo with PRODUCTS products; with ``findings``, one pii source abroad and one opaque pipeline,
    so that edits of the dependencies change findings that follow the graph (residency.derived, explainability)."""
    generate_repo: Any = runpy.run_path(str(GENERATOR))["generate_repo"]
    generate_repo(root, PRODUCTS * 10)
    if findings:
        source = root / "specs" / "product-00001" / "source-0.yaml"
        source.write_text(source.read_text().replace("region: uae-north", "region: eu-west"))
        pipeline = root / "specs" / "product-00003" / "pipeline-0.yaml"
        pipeline.write_text(pipeline.read_text().replace("explainability: true", "explainability: false"))
    return root


def incremental_and_full(root: Path) -> list[tuple[list[Any], list[Any]]] | None:
    """Per environment: the findings with kept results, and without any cache; None when the project is invalid."""
    project = Project.open(root)
    validation = project.validate()
    if not validation.ok:
        return None
    pairs = []
    for environment in project.environments(validation):
        graph = project.resolve(environment, validation).graph
        if graph is None:
            return None
        kept = list(project.evaluate_policies(graph, today=TODAY))
        full = check_graph(graph, project.name, project.policy_set(), today=TODAY, cache=None)
        pairs.append((kept, full))
    return pairs


def random_edit(root: Path, chance: random.Random) -> tuple[Path, str] | None:
    """Apply one random edit to one random spec file; (the file, its text before) or None when none applies."""
    files = sorted((root / "specs").rglob("*.yaml")) + sorted((root / "environments").glob("*.yaml"))
    target = chance.choice(files)
    text = target.read_text()
    applicable = [(what, old, new) for what, old, new in EDITS if re.search(old, text)]
    if not applicable:
        return None
    _, old, new = chance.choice(applicable)
    target.write_text(re.sub(old, new.replace("{g}", str(chance.randrange(PRODUCTS))), text, count=1))
    return target, text


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kept_results_equal_a_full_evaluation_after_random_single_spec_edits(tmp_path: Path, seed: int) -> None:
    root = generated(tmp_path / "repo", findings=True)
    chance = random.Random(seed)
    assert incremental_and_full(root) is not None
    checked = 0
    while checked < 12:
        edited = random_edit(root, chance)
        if edited is None:
            continue
        pairs = incremental_and_full(root)
        if pairs is None:  # the edit broke validation: undo it, it says nothing about policies
            edited[0].write_text(edited[1])
            continue
        for kept, full in pairs:
            assert kept == full, edited[0]
        checked += 1


def counts(log: Path) -> list[int]:
    """The number of subjects of every evaluation logged so far."""
    return [int(line) for line in log.read_text().split()] if log.exists() else []


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A log of how many subjects each evaluation really evaluates (a full one counts every subject).

    Evaluation runs in a forked child, so the counts go through a file.
    """
    log = tmp_path / "evaluated.log"
    real = evaluate._evaluate

    def counted(graph: Any, documents: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        only = kwargs.get("only")
        with log.open("a") as out:
            out.write(f"{len(documents['subjects']) if only is None else len(only)}\n")
        return real(graph, documents, *args, **kwargs)

    monkeypatch.setattr(evaluate, "_evaluate", counted)
    return log


def dev_findings(root: Path) -> list[Any]:
    project = Project.open(root)
    graph = project.resolve("dev").graph
    assert graph is not None
    return list(project.evaluate_policies(graph, today=TODAY))


def test_an_edit_re_evaluates_only_the_subjects_downstream_of_it(tmp_path: Path, evaluated: Path) -> None:
    root = generated(tmp_path / "repo")
    dev_findings(root)
    assert counts(evaluated) == [PRODUCTS * 10 + 1], "first evaluation: every resource and the environment"
    source = root / "specs" / "product-00002" / "source-0.yaml"
    source.write_text(source.read_text().replace("region: uae-north", "region: eu-west"))
    findings = dev_findings(root)
    # the source, the view on it, the service, the pipeline (features and labels) and the deployment
    assert counts(evaluated)[1] == 5
    assert {f.resource for f in findings if f.policy.startswith("residency.")} == {
        "DataSource/src-2-0", "FeatureView/view-2-0", "FeatureService/service-2",
        "TrainingPipeline/model-2", "Deployment/api-2",
    }  # fmt: skip
    dev_findings(root)
    assert len(counts(evaluated)) == 2, "unchanged: nothing evaluated"


def test_a_policy_that_reads_the_graph_re_evaluates_everything(tmp_path: Path, evaluated: Path) -> None:
    root = generated(tmp_path / "repo")
    (root / "policies").mkdir()
    (root / "policies" / "size.rego").write_text(
        "package mlspec.policies.size\n\nimport rego.v1\n\n"
        'warn contains {"id": "size.large", "message": "large", "path": "", "fix": ""} if {\n'
        '\tinput.resource.kind == "Environment"\n\tcount(data.mlspec.graph.resources) > 60\n}\n'
    )
    assert not [f for f in dev_findings(root) if f.policy == "size.large"]
    (root / "specs" / "extra.yaml").write_text(
        (root / "specs" / "product-00000" / "entity-0.yaml").read_text().replace("entity-0", "entity-extra")
    )
    assert [f.resource for f in dev_findings(root) if f.policy == "size.large"] == ["Environment/dev"]
    assert counts(evaluated) == [PRODUCTS * 10 + 1, PRODUCTS * 10 + 2]


def test_which_project_modules_read_only_their_input() -> None:
    bank = (Path(__file__).resolve().parents[2] / "policies" / "bank.rego").read_text()
    assert reads_only_input(bank)
    quiet = 'package mlspec.policies.x\n# data.mlspec.graph in a comment\nm := "data with"\nr := `data`\n'
    assert reads_only_input(quiet)
    assert not reads_only_input("package mlspec.policies.x\nn := count(data.mlspec.graph.resources)\n")
    assert not reads_only_input("package mlspec.policies.x\nimport data.mlspec.lib\n")
    assert not reads_only_input("package mlspec.policies.x\nd := deny with input.resource as {}\n")
    assert not reads_only_input("package mlspec.lib\nx := 1\n")
    assert not reads_only_input("package helpers\nx := 1\n")


def test_many_subjects_are_split_over_children_with_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evaluated: Path
) -> None:
    monkeypatch.setattr(evaluate, "PARALLEL_FROM", 10)
    monkeypatch.setattr(evaluate.os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
    root = generated(tmp_path / "repo", findings=True)
    pairs = incremental_and_full(root)
    assert pairs is not None
    for kept, full in pairs:
        assert kept == full
    assert any(kept for kept, _ in pairs), "the repo has findings to compare"
    # per environment: three children for the kept evaluation, then one full evaluation without a cache
    assert counts(evaluated)[:4] == [21, 20, 20, PRODUCTS * 10 + 1]


def test_a_failing_child_fails_the_whole_evaluation_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate, "PARALLEL_FROM", 10)
    monkeypatch.setattr(evaluate.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    real = evaluate._evaluate

    def broken(graph: Any, documents: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if "Deployment/api-3" in (kwargs.get("only") or ()):
            raise RuntimeError("engine fell over")
        return real(graph, documents, *args, **kwargs)

    monkeypatch.setattr(evaluate, "_evaluate", broken)
    findings = dev_findings(generated(tmp_path / "repo"))
    assert [(f.policy, f.severity) for f in findings] == [("policy.error", "deny")]
    assert "engine fell over" in findings[0].message
