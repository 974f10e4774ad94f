"""`mlspec policy test`: run every ``test_`` rule of the ``*_test.rego`` files, like `opa test`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlspec.load.discovery import display_path
from mlspec.policy.engine import PolicyEngineError, RegorusEngine

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.M)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.M)


@dataclass(frozen=True)
class PolicyTestResult:
    """One test rule's outcome."""

    file: str
    name: str
    passed: bool
    seconds: float
    error: str = ""


def run_policy_tests(files: Iterable[Path]) -> list[PolicyTestResult]:
    """Load every file, then evaluate each test rule; a file that does not load fails as a whole."""
    files = list(files)
    engine = RegorusEngine()
    results: list[PolicyTestResult] = []
    for path in files:
        try:
            engine.add_policy(display_path(path), path.read_text(encoding="utf-8"))
        except (PolicyEngineError, UnicodeDecodeError, OSError) as exc:
            results.append(PolicyTestResult(display_path(path), "(load)", False, 0.0, str(exc)))
    if results:
        return results
    for path in files:
        if not path.name.endswith("_test.rego"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        package = _PACKAGE.search(text)
        if package is None:
            continue
        for name in dict.fromkeys(_TEST_RULE.findall(text)):
            start = time.perf_counter()
            try:
                value = engine.evaluate(f"data.{package.group(1)}.{name}", {})
                results.append(PolicyTestResult(display_path(path), name, value is True, time.perf_counter() - start))
            except PolicyEngineError as exc:
                results.append(PolicyTestResult(display_path(path), name, False, time.perf_counter() - start, str(exc)))
    return results
