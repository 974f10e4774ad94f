"""Validation refuses what the targets would refuse later, located at the value: names Kubernetes cannot take,
infinite or NaN numbers, seeds past 64 bits, and invisible or control characters in any text."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mlspec.views.diagnostics_text import render_diagnostics
from mlspec.views.style import Style
from tests.conftest import MINIMAL, parse


def _errors(kind: str, old: str, new: str) -> list[tuple[str, str, str]]:
    text = textwrap.dedent(MINIMAL[kind]).lstrip("\n")
    assert old in text
    _, diagnostics = parse(text.replace(old, new))
    return [(d.code, str(d.location), d.message) for d in diagnostics if d.severity == "error"]


def test_a_deployment_named_by_digits_is_refused_at_its_name() -> None:
    (found,) = _errors("Deployment", "name: fraud-api", 'name: "12345"')
    code, where, message = found
    assert code == "invalid-value" and where.startswith("spec.yaml:3:") and "DNS-1035" in message


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_infinite_or_nan_numbers_are_refused(value: str) -> None:
    found = _errors("TrainingPipeline", "model:\n", f"hyperparameters: {{weight_decay: {value}}}\n  model:\n")
    assert [code for code, _, _ in found] == ["invalid-value"]
    assert "weight_decay" in found[0][2]


@pytest.mark.parametrize("seed", [str(2**63), "1" * 60, "-1"])
def test_a_seed_outside_64_bits_is_refused(seed: str) -> None:
    found = _errors("TrainingPipeline", "model:\n", f"hyperparameters: {{seed: {seed}}}\n  model:\n")
    assert found and all("seed" in message or code == "number-too-large" for code, _, message in found), found


@pytest.mark.parametrize(
    ("written", "hidden"),
    [("\u202e", "\u202e"), ("\u2066", "\u2066"), ("\\e", "\x1b"), ("\\x07", "\x07"), ("\\u202E", "\u202e")],
    ids=["raw-rlo", "raw-lri", "escaped-esc", "escaped-bel", "escaped-rlo"],
)
def test_invisible_or_control_characters_are_refused_and_never_echoed(
    written: str, hidden: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = textwrap.dedent(MINIMAL["Deployment"]).lstrip("\n")
    text = text.replace("name: fraud-api", f'name: fraud-api, owner: "a{written}b"')
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(text, encoding="utf-8")  # the excerpt is read from it
    _, diagnostics = parse(text)
    assert [d.code for d in diagnostics] == ["invalid-character"]
    assert f"U+{ord(hidden):04X}" in diagnostics[0].message
    shown = render_diagnostics(diagnostics, Style(False))
    assert "| metadata:" in shown and hidden not in shown  # the excerpt shows a replacement character


def test_tabs_newlines_and_ordinary_unicode_stay_allowed() -> None:
    text = textwrap.dedent(MINIMAL["Deployment"]).lstrip("\n")
    owner = "\u0641\u0631\u064a\u0642\\t\u2014 payments\\n"  # Arabic, a tab, an em dash, an escaped newline
    text = text.replace("name: fraud-api", f'name: fraud-api, owner: "{owner}"')
    specs, diagnostics = parse(text)
    assert diagnostics == [] and len(specs) == 1
