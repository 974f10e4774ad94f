"""Rego conformance: cases with OPA's expected results that any engine behind PolicyEngine must pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlspec.policy.engine import PolicyEngineError, RegorusEngine
from tests.conftest import FIXTURES

CASES = yaml.safe_load((FIXTURES / "rego_conformance.yaml").read_text())


def normalise(value: Any) -> Any:
    """Sets come back from engines as lists in any order; compare them sorted."""
    if isinstance(value, list):
        items = [normalise(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_engine_matches_opa_semantics(case: dict[str, Any]) -> None:
    engine = RegorusEngine()
    engine.add_policy("case.rego", case["policy"])
    engine.set_data(case.get("data") or {})
    assert normalise(engine.evaluate(case["query"], case.get("input") or {})) == normalise(case["expected"])


def test_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


def test_compile_errors_name_the_file_line_and_column_without_a_backtrace() -> None:
    engine = RegorusEngine()
    with pytest.raises(PolicyEngineError) as info:
        engine.add_policy("policies/broken.rego", "package p\nimport rego.v1\nx if {\n")
    message = str(info.value)
    assert "policies/broken.rego:" in message and "Stack backtrace" not in message


def test_runtime_errors_raise_instead_of_returning_nothing(tmp_path: Path) -> None:
    engine = RegorusEngine()
    engine.add_policy("p.rego", 'package p\nimport rego.v1\nx := to_number("not a number")\n')
    with pytest.raises(PolicyEngineError):
        engine.evaluate("data.p.x", {})
