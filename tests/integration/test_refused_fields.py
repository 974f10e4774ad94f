"""Refused spec fields fail the render with ``unsupported-by-target`` at the field, on local and cluster targets;
honoured ones reach the rendered output."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlspec.render.kfp import FRAMEWORKS
from mlspec.render.refused import REFUSED_FIELDS, REFUSED_SOURCE_TYPES
from mlspec.spec.training import ModelSpec
from tests.conftest import MINIMAL, CliResult, recorded_images, write_files

PROJECT = """
    apiVersion: mlspec/v1
    kind: Project
    metadata: {name: demo, owner: ml-platform}
    """
LOCAL = """
    apiVersion: mlspec/v1
    kind: Environment
    metadata: {name: local}
    spec:
      tier: local
      region: uae-north
      data_residency: {allowed_regions: [uae-north]}
    """
CLUSTER = """
    apiVersion: mlspec/v1
    kind: Environment
    metadata: {name: dev}
    spec:
      tier: development
      region: uae-north
      data_residency: {allowed_regions: [uae-north]}
      identity: {issuer: "https://login.example.com/bank/v2.0"}
      targets:
        kubernetes: {namespace: ml-dev}
        pipelines: kubeflow
        serving: kserve
        registry: {type: mlflow, tracking_uri: "https://mlflow.dev.internal", artifact_store: {uri: "s3://dev-models", region: uae-north}}
        images: {registry: registry.dev.internal/ml}
    """
IMAGES = recorded_images("registry.dev.internal/ml")
CLUSTER_DATA = "az://team-data@teamstore.blob.core.windows.net/txns.parquet"
SPEC_FILES = {kind: f"specs/{kind.lower()}.yaml" for kind in ("DataSource", "TrainingPipeline", "Deployment")}
OBJECT_STORE = "type: object_store\n  uri: az://team-data@teamstore.blob.core.windows.net/txns.parquet\n  credentials: secret://team/s3"

# (case, kind, text to replace in that kind's MINIMAL spec, replacement, text at the refused location, YAML path)
REFUSED = [
    ("retention", "DataSource", "classification: pii", "classification: pii\n  retention: 30d", "30d",
     "spec.retention"),
    ("credentials", "DataSource", "type: file\n  path: data/txns.parquet", OBJECT_STORE, "secret://team/s3",
     "spec.credentials"),
    ("retrain_on", "TrainingPipeline", "label:", "retrain_on: [manual, drift]\n  label:", "[manual, drift]",
     "spec.retrain_on"),
    ("action", "Deployment", "model: {name: fraud-detector}",
     "model: {name: fraud-detector}\n  monitoring: {drift: {method: psi, action: alert}}", "alert",
     "spec.monitoring.drift.action"),
    ("auto_promote", "Deployment", "{strategy: canary, steps: [10, 50, 100]}",
     "{strategy: blue_green, auto_promote: false}", "false", "spec.rollout.auto_promote"),
    ("analysis", "Deployment", "{strategy: canary, steps: [10, 50, 100]}",
     "{strategy: shadow, analysis: {max_p99_ms: 20}}", "{max_p99_ms: 20}", "spec.rollout.analysis"),
    ("postgres", "DataSource", "type: file\n  path: data/txns.parquet",
     "type: postgres\n  connection: secret://team/pg\n  query: select * from txns", "postgres", "spec.type"),
    ("kafka", "DataSource", "type: file\n  path: data/txns.parquet",
     "type: kafka\n  bootstrap_servers: broker:9092\n  topic: txns", "kafka", "spec.type"),
]  # fmt: skip
# The same fields, set to what the targets do: they render.
HONOURED = [
    ("retrain_on", "TrainingPipeline", "label:", "retrain_on: [manual]\n  label:"),
    ("action", "Deployment", "model: {name: fraud-detector}",
     "model: {name: fraud-detector}\n  monitoring: {drift: {method: psi, action: none}}"),
    ("auto_promote", "Deployment", "{strategy: canary, steps: [10, 50, 100]}",
     "{strategy: blue_green, auto_promote: true}"),
    # the defaults are what the targets do: drift reported (action none), green promoted (auto_promote true)
    ("action-default", "Deployment", "model: {name: fraud-detector}",
     "model: {name: fraud-detector}\n  monitoring: {drift: {method: ks}}"),
    ("auto_promote-default", "Deployment", "{strategy: canary, steps: [10, 50, 100]}", "{strategy: blue_green}"),
    ("audiences", "Deployment", "model: {name: fraud-detector}",
     "model: {name: fraud-detector}\n  auth: {method: oidc, audiences: [gateway]}"),
    ("analysis", "Deployment", "steps: [10, 50, 100]}", "steps: [10, 50, 100], analysis: {max_p99_ms: 20}}"),
    ("interval", "Deployment", "steps: [10, 50, 100]}", "steps: [10, 50, 100], analysis: {interval: 10m}}"),
    ("analysis-ab", "Deployment", "{strategy: canary, steps: [10, 50, 100]}",
     "{strategy: ab, variants: [{alias: champion, weight: 50}, {alias: challenger, weight: 50}]}"),
]  # fmt: skip


def platform(root: Path, kind: str = "", old: str = "", new: str = "") -> Path:
    """The minimal platform, one file per kind, with ``old`` replaced by ``new`` in ``kind``'s spec."""
    files = {"mlspec.yaml": PROJECT, "environments/local.yaml": LOCAL, "environments/dev.yaml": CLUSTER,
             "images.lock.json": IMAGES}  # fmt: skip
    for name, text in MINIMAL.items():
        if name in ("Environment", "Waiver"):
            continue
        spec = textwrap.dedent(text).lstrip("\n")
        if name == kind:
            assert old in spec, (kind, old)
            spec = spec.replace(old, new)
        # dev trains on Kubeflow, which reads its offline data in the cluster: from object storage, never from disk
        spec = spec.replace("path: data/txns.parquet", f"path: {CLUSTER_DATA}")
        files[SPEC_FILES.get(name, f"specs/{name.lower()}.yaml")] = spec
    return write_files(root, files)


def refusals(out: str) -> list[str]:
    """``file:line:col`` of every ``unsupported-by-target`` error the CLI printed."""
    return re.findall(r"^(\S+:\d+:\d+): error\[unsupported-by-target\]", out.replace("\\", "/"), re.MULTILINE)


def position(path: Path, needle: str) -> tuple[int, int]:
    """1-based line and column of ``needle``'s only occurrence in the file."""
    text = path.read_text(encoding="utf-8")
    assert text.count(needle) == 1, needle
    before = text[: text.index(needle)]
    return before.count("\n") + 1, len(before) - before.rfind("\n")


@pytest.mark.parametrize("env", ["local", "dev"])
@pytest.mark.parametrize(("case", "kind", "old", "new", "at", "path"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_refused_field_fails_the_render_at_the_field(
    tmp_path: Path, cli: Callable[..., CliResult], env: str, case: str, kind: str, old: str, new: str, at: str,
    path: str,
) -> None:  # fmt: skip
    root = platform(tmp_path / "p", kind, old, new)
    line, column = position(root / SPEC_FILES[kind], at)
    result = cli("render", "--env", env, "-o", str(tmp_path / "out"), cwd=root)
    assert result.code == 1, result.out + result.err
    assert refusals(result.out) == [f"{SPEC_FILES[kind]}:{line}:{column}"], (case, path, result.out)
    assert "= help: " in result.out, "a refusal says how to fix it"
    assert not (tmp_path / "out" / env).exists()


def test_every_refusal_in_the_registry_is_exercised() -> None:
    tested = {case.split("-")[0] for case, *_ in REFUSED}
    assert tested == {r.field for r in REFUSED_FIELDS} | {
        m.model_fields["type"].annotation.__args__[0] for m in REFUSED_SOURCE_TYPES
    }  # type: ignore[attr-defined]


def test_refusals_of_later_work_say_so(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    case = next(c for c in REFUSED if c[0] == "retrain_on")
    root = platform(tmp_path / "p", case[1], case[2], case[3])
    result = cli("render", "--env", "local", "-o", str(tmp_path / "out"), cwd=root)
    assert "refused until a later issue builds retraining triggers" in result.out
    assert {r.field for r in REFUSED_FIELDS if r.until} >= {"retention", "retrain_on", "action"}


@pytest.mark.parametrize(("case", "kind", "old", "new"), HONOURED, ids=[c[0] for c in HONOURED])
def test_the_honoured_values_render(tmp_path: Path, cli: Callable[..., CliResult], case: str, kind: str, old: str,
                                    new: str) -> None:  # fmt: skip
    root = platform(tmp_path / "p", kind, old, new)
    for env in ("local", "dev"):
        result = cli("render", "--env", env, "-o", str(tmp_path / env), cwd=root)
        assert result.code == 0, (case, env, result.out + result.err)
    if case == "action":  # the monitoring job acts as the spec says
        monitoring = json.loads((tmp_path / "local" / "local" / "monitoring" / "fraud-api.json").read_text())
        assert monitoring["action"] == {"on_drift": "none", "retrain": None}
    if case == "auto_promote":  # the runtime's router, which switches to green, carries it
        served = yaml.safe_load_all((tmp_path / "dev" / "dev" / "kubernetes" / "fraud-api.yaml").read_text())
        (isvc,) = [d for d in served if d["kind"] == "InferenceService"]
        env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"]["env"]}
        assert json.loads(env["MLSPEC_SERVING"])["rollout"]["auto_promote"] is True


def test_the_model_framework_picks_the_trainer_in_the_rendered_pipeline(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    from mlspec.render.kfp_components import TRAINERS

    assert set(FRAMEWORKS) == set(TRAINERS) == set(ModelSpec.model_fields["framework"].annotation.__args__)  # type: ignore[union-attr]
    root = platform(tmp_path / "p")
    assert cli("render", "--env", "local", "-o", str(tmp_path / "out"), cwd=root).code == 0
    pipeline = yaml.safe_load((tmp_path / "out" / "local" / "kfp" / "fraud-detector.yaml").read_text())
    executors = pipeline["deploymentSpec"]["executors"]
    train = executors[pipeline["components"]["comp-train"]["executorLabel"]]["container"]
    assert "from mlspec.runtime.steps import train as run" in "\n".join(train["command"])
    assert (
        json.loads(pipeline["root"]["inputDefinitions"]["parameters"]["training_spec_json"]["defaultValue"])["spec"][
            "model"
        ]["framework"]
        == "torch"
    )


def test_an_unknown_framework_is_refused(
    tmp_path: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mlspec.render.kfp.FRAMEWORKS", {})  # as if torch were not a trainer this mlspec has
    root = platform(tmp_path / "p")
    result = cli("render", "--env", "local", "-o", str(tmp_path / "out"), cwd=root)
    line, _ = position(root / SPEC_FILES["TrainingPipeline"], "model:\n")
    assert result.code == 1
    assert refusals(result.out) == [f"{SPEC_FILES['TrainingPipeline']}:{line + 1}:5"], result.out  # model's body
    assert "model.framework: torch, which no pipeline step can train" in result.out
