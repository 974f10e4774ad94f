"""The command line: exit codes, formats, project discovery, init, and no tracebacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mlspec import __version__
from tests.conftest import MINIMAL, REPO, CliResult, minimal_platform, run_mlspec, write_files

PROJECT = """
apiVersion: mlspec/v1
kind: Project
metadata: {name: demo}
spec: {specs: [specs], environments: environments}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    parts = minimal_platform().split("---\n")
    files: dict[str, str] = {"mlspec.yaml": PROJECT}
    for index, part in enumerate(parts):
        folder = "environments" if "kind: Environment" in part else "specs"
        files[f"{folder}/{index}.yaml"] = part
    return write_files(tmp_path / "repo", files)


def test_validate_ok_exits_zero(project: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("validate", str(project))
    assert result.code == 0
    assert f"valid: {len(MINIMAL)} specs" in result.out


def test_validate_finds_the_project_from_a_subfolder(project: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("validate", cwd=project / "specs")
    assert result.code == 0 and f"{len(MINIMAL)} specs" in result.out


def test_validate_reports_every_problem_then_exits_one(project: Path, cli: Callable[..., CliResult]) -> None:
    spec = project / "specs" / "1.yaml"
    spec.write_text(spec.read_text().replace("join_keys: [customer_id]", "join_key: [customer_id]"))
    dep = project / "specs" / "5.yaml"
    dep.write_text(dep.read_text().replace("strategy: canary", "strategy: canery"))
    result = cli("validate", "--format", "compact", str(project))
    assert result.code == 1
    lines = [line for line in result.out.splitlines() if ": error[" in line]
    assert len(lines) == 2
    assert "1.yaml:4:" in lines[0] and "error[unknown-field]" in lines[0] and "did you mean 'join_keys'?" in lines[0]
    assert "5.yaml:6:" in lines[1] and "error[invalid-value]" in lines[1]


def test_text_format_shows_the_source_line_and_a_caret(project: Path, cli: Callable[..., CliResult]) -> None:
    spec = project / "specs" / "2.yaml"
    spec.write_text(spec.read_text().replace("ttl: 7d", "ttl: 7 days"))
    result = cli("validate", "--color", "never", str(project))
    lines = result.out.splitlines()
    header = next(i for i, line in enumerate(lines) if "error[invalid-value]" in line)
    assert lines[header + 1].endswith("ttl: 7 days")
    caret = lines[header + 2]
    assert caret.index("^") == lines[header + 1].index("7 days")
    assert "\x1b[" not in result.out


def test_json_format_is_versioned_and_complete(project: Path, cli: Callable[..., CliResult]) -> None:
    (project / "specs" / "bad.yaml").write_text(
        "apiVersion: mlspec/v1\nkind: Entity\nmetadata: {name: x}\nspec: {join_keys: []}\n"
    )
    result = cli("validate", "--format", "json", str(project))
    report = json.loads(result.out)
    assert result.code == 1
    assert report["schema_version"] == 1 and report["ok"] is False
    assert report["summary"] == {"files": 10, "specs": len(MINIMAL), "errors": 1, "warnings": 0}
    (d,) = report["diagnostics"]
    assert set(d) == {"code", "severity", "message", "file", "line", "column", "path", "hint", "related"}
    assert (d["code"], d["line"], d["column"], d["path"]) == ("out-of-range", 4, 19, "spec.join_keys")


def test_color_always_colours(project: Path, cli: Callable[..., CliResult]) -> None:
    (project / "specs" / "bad.yaml").write_text("kind: Nope\n")
    assert "\x1b[" in cli("validate", "--color", "always", str(project)).out


def test_loose_files_outside_a_project(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    write_files(tmp_path, {"a.yaml": MINIMAL["Entity"], "b.yaml": MINIMAL["DataSource"]})
    result = cli("validate", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert result.code == 0 and "2 specs in 2 files" in result.out


def test_missing_spec_folder_is_reported_in_the_project_file(project: Path, cli: Callable[..., CliResult]) -> None:
    (project / "mlspec.yaml").write_text(PROJECT.replace("specs: [specs]", "specs: [specs, models]"))
    result = cli("validate", "--format", "compact", str(project))
    assert result.code == 1
    assert "mlspec.yaml:5:23:" in result.out and "error[missing-directory]" in result.out


def test_invalid_project_file_is_reported(project: Path, cli: Callable[..., CliResult]) -> None:
    (project / "mlspec.yaml").write_text(PROJECT.replace("environments: environments", "enviroments: environments"))
    result = cli("validate", "--format", "compact", str(project))
    assert result.code == 1 and "did you mean 'environments'?" in result.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "/no/such/path"], "path does not exist"),
        (["validate", "--format", "xml"], "Invalid value for '--format'"),
        (["frobnicate"], "No such command"),
        (["init"], "Missing argument"),
    ],
)
def test_usage_errors_exit_two(args: list[str], message: str, cli: Callable[..., CliResult]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert message in result.err


def test_no_project_found_is_a_usage_error(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("validate", cwd=tmp_path)
    assert result.code == 2
    assert "no mlspec.yaml found" in result.err and "mlspec init" in result.err


def test_empty_folder_is_a_usage_error(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    (tmp_path / "empty").mkdir()
    result = cli("validate", str(tmp_path / "empty"))
    assert result.code == 2 and "no YAML files" in result.err


def test_version(cli: Callable[..., CliResult]) -> None:
    result = cli("--version")
    assert result.code == 0 and __version__ in result.out


def test_init_creates_a_project_that_validates(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    target = tmp_path / "Bank Platform"
    result = cli("init", str(target))
    assert result.code == 0
    for path in (
        "mlspec.yaml",
        "specs",
        "environments",
        "policies",
        ".github/workflows/mlspec.yml",
        ".vscode/settings.json",
        "schema/mlspec.schema.json",
    ):
        assert (target / path).exists(), path
    assert "name: bank-platform" in (target / "mlspec.yaml").read_text()
    validated = cli("validate", str(target))
    assert validated.code == 0, validated.out
    envs = sorted(p.stem for p in (target / "environments").glob("*.yaml"))
    assert envs == ["dev", "local", "prod", "staging"]


def test_init_refuses_to_overwrite(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    assert cli("init", str(tmp_path / "p")).code == 0
    again = cli("init", str(tmp_path / "p"))
    assert again.code == 2 and "--force" in again.err
    assert cli("init", "--force", str(tmp_path / "p")).code == 0


def test_init_refuses_invalid_names(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    result = cli("init", "--name", "Bad_Name", str(tmp_path / "p"))
    assert result.code == 2 and "invalid project name" in result.err
    assert not (tmp_path / "p").exists()


def test_internal_errors_are_one_line_without_traceback(
    project: Path, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlspec.app.project import Project

    def broken(self: Project) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Project, "validate", broken)
    result = cli("validate", str(project))
    assert result.code == 3
    assert result.err.splitlines()[0] == "internal error: RuntimeError: boom"
    assert "Traceback" not in result.err and "MLSPEC_DEBUG=1" in result.err


def test_a_project_file_that_is_a_folder_is_not_a_project(tmp_path: Path) -> None:
    (tmp_path / "mlspec.yaml").mkdir()
    proc = run_mlspec("validate", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no mlspec.yaml found" in proc.stderr


def test_reference_platform_validates_through_the_real_entry_point() -> None:
    proc = run_mlspec("validate", str(REPO))
    assert proc.returncode == 0, proc.stdout
    assert "✓ valid" in proc.stdout


def test_file_system_errors_are_messages_not_internal_errors(project: Path, cli: Callable[..., CliResult]) -> None:
    blocker = project / "blocked"
    blocker.write_text("a file where a folder must go")
    result = cli("schema", "-o", str(blocker / "schemas"))
    assert result.code == 1 and result.err.startswith("error: cannot use") and "blocked" in result.err
