"""Everything mlspec reads or writes stays inside the project: spec folders and files (links resolved), data
source paths, data folders and key files. What leaves it is a located error that prints nothing of the target,
and a pipe among the specs never blocks a command."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, copy_platform, run_mlspec

SECRET = "aws_access_key_id = AKIAEXAMPLESECRET0000"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A credentials file outside the project (which lives in tmp_path / 'p')."""
    path = tmp_path / "credentials"
    path.write_text(f"[default]\n{SECRET}\n")
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "p").mkdir()
    return copy_platform(tmp_path / "p")


def _said(result: CliResult) -> str:
    return (result.out + result.err).replace("\\", "/")


def test_a_spec_file_linking_out_of_the_project_is_refused_unread(
    project: Path, outside: Path, cli: Callable[..., CliResult]
) -> None:
    (project / "specs" / "creds.yaml").symlink_to(outside)
    for command in (["validate"], ["check", "--env", "dev"], ["plan", "--env", "dev"]):
        result = cli(*command, cwd=project)
        said = _said(result)
        assert result.code == 1, (command, said)
        assert "error[outside-project]" in said and "specs/creds.yaml is a link to" in said, said
        assert SECRET not in said and "[default]" not in said


@pytest.mark.parametrize("folder", ["../../../../etc", "./../..", "specs/../.."])
def test_a_spec_folder_outside_the_project_is_refused(
    project: Path, cli: Callable[..., CliResult], folder: str
) -> None:
    text = (project / "mlspec.yaml").read_text()
    (project / "mlspec.yaml").write_text(text.replace("  specs: [specs]", f"  specs: [specs, {folder}]"))
    result = cli("validate", cwd=project)
    said = _said(result)
    assert result.code == 1 and "mlspec.yaml:" in said, said
    assert "root:x:0:0" not in said


def test_a_spec_folder_linking_out_is_refused(project: Path, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.yaml").write_text(f"# {SECRET}\n")
    (project / "more").symlink_to(elsewhere)
    text = (project / "mlspec.yaml").read_text()
    (project / "mlspec.yaml").write_text(text.replace("  specs: [specs]", "  specs: [specs, more]"))
    result = cli("validate", cwd=project)
    said = _said(result)
    assert result.code == 1 and "error[outside-project]" in said and "folder 'more'" in said, said
    assert SECRET not in said


def test_the_state_file_stays_inside_the_project(project: Path, tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    text = (project / "mlspec.yaml").read_text()
    (project / "mlspec.yaml").write_text(text.replace("path: .mlspec/state.db", "path: ../../x.db"))
    result = cli("plan", "--env", "dev", cwd=project)
    assert result.code in (1, 2), _said(result)
    assert "state" in _said(result) and not (tmp_path.parent / "x.db").exists() and not (tmp_path / "x.db").exists()


def _override(project: Path, env: str, patch: str) -> None:
    path = project / "environments" / f"{env}.yaml"
    text = path.read_text()
    path.write_text(text.replace("  overrides:\n", f"  overrides:\n    - {patch}\n", 1))


@pytest.mark.parametrize(
    "location",
    ["../../credentials", "{outside}", "data/link.parquet"],
    ids=["dot-dot", "absolute", "symlink-out"],
)
def test_a_data_source_outside_the_project_is_a_located_error(
    project: Path, outside: Path, cli: Callable[..., CliResult], location: str
) -> None:
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "link.parquet").symlink_to(outside)
    path = location.format(outside=outside)
    _override(project, "local", f'{{target: DataSource/merchant-risk, patch: {{spec: {{path: "{path}"}}}}}}')
    result = cli("check", "--env", "local", cwd=project)
    said = _said(result)
    assert result.code == 1, said
    assert "error[outside-project]" in said and "DataSource 'merchant-risk' path" in said, said
    assert re.search(r"environments/local\.yaml:\d+:\d+: error\[outside-project\]", said), said
    assert SECRET not in said


def test_a_pipe_as_data_is_refused_and_a_pipe_as_a_spec_never_blocks(project: Path) -> None:
    os.mkfifo(project / "specs" / "pipe.yaml")
    done = run_mlspec("validate", cwd=project, timeout=60)  # a blocked read would time out here
    assert done.returncode == 1 and "not a regular file" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [("data_dir", "../../elsewhere"), ("kms_key", "file:///etc/passwd")],
)
def test_environment_folders_and_key_files_stay_inside(
    project: Path, cli: Callable[..., CliResult], field: str, value: str
) -> None:
    path = project / "environments" / "local.yaml"
    text = path.read_text()
    if field == "data_dir":
        text = re.sub(r"data_dir: \S+", f"data_dir: {value}", text, count=1)
    else:
        text = re.sub(r"kms_key: [^,}\s]+", f"kms_key: {value}", text, count=1)
    path.write_text(text)
    result = cli("check", "--env", "local", cwd=project)
    said = _said(result)
    assert result.code == 1 and "error[outside-project]" in said and f"Environment 'local' {field}" in said, said
    assert "root:x:0:0" not in said


@pytest.mark.parametrize("damage", ["garbage", "foreign-tables", "damaged-record"])
def test_corrupt_state_is_a_clean_error_naming_the_file_and_the_recovery(
    project: Path, cli: Callable[..., CliResult], damage: str
) -> None:
    import sqlite3

    from mlspec.state.sqlite import SCHEMA

    state = project / ".mlspec" / "state.db"
    state.parent.mkdir()
    if damage == "garbage":
        state.write_bytes(os.urandom(8192))
    else:
        with sqlite3.connect(state) as db:
            if damage == "foreign-tables":
                db.execute("CREATE TABLE resources (x)")
            else:
                db.executescript(SCHEMA)
                db.execute("INSERT INTO resources VALUES ('dev', 'DataSource/txns', '{not json')")
                db.execute("INSERT INTO serials VALUES ('dev', 1)")
    result = cli("plan", "--env", "dev", cwd=project)
    said = _said(result)
    assert result.code == 1, said  # not 3, the internal error
    assert f"the state file {state} is not usable" in said and "restore it from a backup" in said, said
    assert "internal error" not in said and "Traceback" not in said
