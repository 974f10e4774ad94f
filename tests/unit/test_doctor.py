"""mlspec doctor: engine versions from real metadata, and conflicts read from Requires-Dist."""

from __future__ import annotations

import importlib.metadata as md
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec.doctor import RULES, diagnose, render_text
from tests.conftest import REPO, CliResult


@pytest.fixture(autouse=True)
def _registered() -> None:
    """The commands as cli.py registers them (a no-op once it does)."""
    from mlspec.cli import cli as main_cli
    from mlspec.cli import report as cli_report

    for command in cli_report.commands.commands.values():
        main_cli.commands.setdefault(command.name or "", command)


def fake_dist(site: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal installed distribution (dist-info with METADATA) under ``site``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    (info / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_real_environment_versions_come_from_metadata(cli: Callable[..., CliResult]) -> None:
    result = cli("doctor", "--format", "json")
    data = json.loads(result.out)
    engines = {e["name"]: e for e in data["engines"]}
    for name in ("feast", "kfp", "mlflow", "torch", "onnx", "onnxruntime", "evidently", "psycopg", "redis"):
        assert engines[name]["version"] == md.version(engines[name]["distribution"])
    assert engines["regorus"]["distribution"] == "gordon-to-regorus"
    assert engines["feast"]["extra"] == "feast" and engines["onnxruntime"]["extra"] == "serve"
    assert engines["kubernetes"]["extra"] == "kfp (through kfp)"
    # the pinned stack is consistent: every rule that applies was checked against real Requires-Dist
    assert result.code == 0 and data["ok"] and data["conflicts"] == []
    assert any(c.startswith("feast[redis] -> redis: redis<8") for c in data["checked"])


def test_doctor_imports_no_engine(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, json\nfrom mlspec.cli import cli, main\nfrom mlspec.cli import report as cli_report\n"
        "cli.commands.setdefault('doctor', cli_report.doctor)\nmain(['doctor'])\nprint(json.dumps(sorted(sys.modules)))"
    )
    # outside a project (inside one it also reads the project file: pydantic, still no engine)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path)
    loaded = {m.split(".")[0] for m in json.loads(proc.stdout.splitlines()[-1])}
    assert not loaded & {"feast", "kfp", "mlflow", "torch", "onnx", "onnxruntime", "redis", "regorus", "pydantic"}
    inside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    loaded = {m.split(".")[0] for m in json.loads(inside.stdout.splitlines()[-1])}
    assert not loaded & {"feast", "kfp", "mlflow", "torch", "onnx", "onnxruntime", "redis", "regorus"}


def test_doctor_warns_when_the_state_lives_on_a_ci_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlspec.app.project import Project
    from tests.conftest import copy_platform

    root = copy_platform(tmp_path)
    project = Project.open(root)
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI"):
        monkeypatch.delenv(name, raising=False)
    assert project.durability_warnings() == [], "a laptop's state stays where it is"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # a GitHub-hosted job
    (found,) = project.durability_warnings()
    assert "lives on this CI runner, which is thrown away after the job and never saved" in found
    edited = (
        (root / "mlspec.yaml")
        .read_text()
        .replace(
            "state: {backend: sqlite, path: .mlspec/state.db}",
            "state: {backend: postgres, url: env://MLSPEC_STATE_URL}",
        )
    )
    (root / "mlspec.yaml").write_text(edited)
    assert Project.open(root).durability_warnings() == [], "PostgreSQL outlives the runner"


def test_redis_8_under_feast_redis_extra_is_an_incompatibility(tmp_path: Path) -> None:
    fake_dist(tmp_path, "feast", "0.67.0", ('redis<8,>=4.2.2; extra == "redis"', "protobuf>=4.24.0"))
    fake_dist(tmp_path, "redis", "8.0.1")
    fake_dist(tmp_path, "protobuf", "6.33.6")
    result = diagnose([str(tmp_path)])
    assert not result.ok
    (conflict,) = result.conflicts
    assert (conflict.dependant, conflict.requirement, conflict.installed) == (
        "feast[redis]",
        "redis<8,>=4.2.2",
        "redis 8.0.1",
    )
    assert "✗ feast[redis] 0.67.0 requires redis<8,>=4.2.2, installed redis 8.0.1" in render_text(result)
    missing = {e.name for e in result.engines if e.version is None}
    assert {"torch", "mlflow", "onnxruntime"} <= missing


def test_protobuf_major_beyond_what_kfp_declares(tmp_path: Path) -> None:
    fake_dist(tmp_path, "kfp", "2.17.0", ("protobuf<7.0,>=6.31.1", "kubernetes<31,>=8.0.0"))
    fake_dist(tmp_path, "protobuf", "7.1.0")
    fake_dist(tmp_path, "kubernetes", "30.1.0")
    result = diagnose([str(tmp_path)])
    assert [(c.dependant, c.requirement) for c in result.conflicts] == [("kfp", "protobuf<7.0,>=6.31.1")]


def test_a_requirement_behind_an_extra_that_is_not_used_is_ignored(tmp_path: Path) -> None:
    fake_dist(tmp_path, "feast", "0.67.0", ('pyarrow<21.0.0; extra == "flink"',))
    fake_dist(tmp_path, "redis", "8.0.1")  # feast declares no redis requirement here: nothing to break
    assert diagnose([str(tmp_path)]).ok


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.dependant}->{r.dependency}")
def test_every_rule_is_declared_by_the_installed_dependant(rule: object) -> None:
    """Rules are not invented: the installed dependant declares a requirement on the dependency."""
    from packaging.requirements import Requirement

    dependant, extra, dependency = rule.dependant, rule.extra, rule.dependency  # type: ignore[attr-defined]
    requirements = [Requirement(r) for r in md.requires(dependant) or []]
    assert any(
        r.name.replace("_", "-").lower() == dependency
        and (r.marker is None or r.marker.evaluate({"extra": extra or ""}))
        for r in requirements
    )
