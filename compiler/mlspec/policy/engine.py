"""The Rego engine behind one small interface, so an engine swap changes one module.

The embedded engine is regorus (Rust, Rego v1, in-process). Policies are loaded
once and evaluated for many inputs. Errors come back as ``PolicyEngineError``
with the engine's own message (file:line:col of the Rego), never a backtrace.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol


class PolicyEngineError(Exception):
    """A policy could not be loaded or evaluated."""


class PolicyEngine(Protocol):
    """What mlspec needs from a Rego engine."""

    def add_policy(self, name: str, text: str) -> None:
        """Load one Rego module; raises PolicyEngineError when it does not compile."""
        ...

    def set_data(self, data: dict[str, Any]) -> None:
        """Replace the base document (``data``)."""
        ...

    def evaluate(self, query: str, input_document: Any) -> Any:
        """Evaluate ``query`` (a rule path like ``data.x.deny``) with ``input``; None when undefined."""
        ...


def _clean(message: str) -> str:
    # regorus appends a Rust backtrace to every error; users need only the Rego location and reason
    return message.split("\n\nStack backtrace:", maxsplit=1)[0].strip()


class RegorusEngine:
    """regorus (gordon-to-regorus 0.13.0): Rego v1 evaluated in-process."""

    name = "regorus"

    def __init__(self) -> None:
        import regorus

        self._engine = regorus.Engine()

    def add_policy(self, name: str, text: str) -> None:
        """Load one Rego module."""
        try:
            self._engine.add_policy(name, text)
        except RuntimeError as exc:
            raise PolicyEngineError(_clean(str(exc))) from None

    def set_data(self, data: dict[str, Any]) -> None:
        """Replace the base document."""
        self._engine.clear_data()
        self._engine.add_data(data)

    def packages(self) -> list[str]:
        """Every package loaded."""
        return sorted(self._engine.get_packages())

    def evaluate(self, query: str, input_document: Any) -> Any:
        """Evaluate a rule or package path; None when undefined. Sets come back as lists (JSON)."""
        self._engine.set_input(input_document)
        try:
            answer = json.loads(self._engine.eval_query_as_json(query))
        except RuntimeError as exc:
            raise PolicyEngineError(_clean(str(exc))) from None
        results = answer.get("result") or []
        if not results:
            return None
        return results[0]["expressions"][0]["value"]


def load_policies(engine: PolicyEngine, files: Iterable[Path], root: Path | None = None) -> None:
    """Load Rego files, naming each by its path relative to ``root`` so errors point at it."""
    for path in files:
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
        engine.add_policy(name, path.read_text(encoding="utf-8"))
