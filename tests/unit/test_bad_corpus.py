"""The corpus of bad inputs: each is refused with the exact location and code, and never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, CliResult, run_mlspec

BAD = FIXTURES / "bad"
EXPECTED: dict[str, list[list[int | str]]] = json.loads((BAD / "expected.json").read_text())


def test_corpus_is_complete() -> None:
    files = sorted(p.name for p in BAD.glob("*.yaml"))
    assert files == sorted(EXPECTED), "every fixture needs an expectation in expected.json, and no more"
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_is_located_and_coded(name: str, cli: Callable[..., CliResult]) -> None:
    result = cli("validate", "--format", "json", str(BAD / name))
    assert result.code == 1
    report = json.loads(result.out)
    found = [[d["line"], d["column"], d["code"]] for d in report["diagnostics"]]
    assert found == EXPECTED[name]
    assert all(d["message"] and d["file"].endswith(name) for d in report["diagnostics"])
    assert report["ok"] is False


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_input_prints_clean_messages_in_a_real_process(name: str) -> None:
    proc = run_mlspec("validate", str(BAD / name), cwd=BAD)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    for line, column, code in EXPECTED[name]:
        assert f"{name}:{line}:{column}: error[{code}]: " in proc.stdout


def test_huge_file_is_refused_before_parsing(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text(
        "apiVersion: mlspec/v1\nkind: Entity\nmetadata: {name: big}\nspec:\n  description: "
        + "x" * (3 * 1024 * 1024)
        + "\n"
    )
    result = cli("validate", "--format", "json", str(huge))
    assert result.code == 1
    (d,) = json.loads(result.out)["diagnostics"]
    assert (d["code"], d["line"], d["column"]) == ("file-too-large", 1, 1)


def test_all_problems_of_all_files_are_reported_at_once(cli: Callable[..., CliResult]) -> None:
    result = cli("validate", "--format", "json", str(BAD))
    report = json.loads(result.out)
    by_file: dict[str, list[list[int | str]]] = {}
    for d in report["diagnostics"]:
        by_file.setdefault(Path(d["file"]).name, []).append([d["line"], d["column"], d["code"]])
    # Validated together, the fixtures resolve each other's references, so cross-file codes differ;
    # every per-document problem must still be there, all in one run.
    per_document = 0
    for name, expected in EXPECTED.items():
        for item in expected:
            if item[2] not in {"unknown-reference", "duplicate-name"}:
                assert item in by_file.get(name, []), (name, item)
                per_document += 1
    assert result.code == 1 and per_document >= 40
