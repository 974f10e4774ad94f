"""The Rego engine behind one small interface, so an engine swap changes one module.

The embedded engine is regorus (Rust, Rego v1, in-process). Policies are loaded
once and evaluated for many inputs. Errors come back as ``PolicyEngineError``
with the engine's own message (file:line:col of the Rego), never a backtrace.
"""

from __future__ import annotations

import contextlib
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


class OpaServerEngine:
    """A running OPA server, through its REST API (policies uploaded, data replaced, rules queried).

    Uses only the standard library, so no HTTP client version can conflict with the
    engines' pins. Every transport problem is a PolicyEngineError, so checks fail closed.
    """

    name = "opa"

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: bytes, content_type: str) -> Any:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}{path}", data=body, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            raise PolicyEngineError(f"OPA server at {self.url} refused {method} {path}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise PolicyEngineError(f"OPA server at {self.url} is unreachable: {exc}") from None
        return json.loads(payload) if payload else {}

    def add_policy(self, name: str, text: str) -> None:
        """Upload one module (PUT /v1/policies/<id>)."""
        policy_id = "mlspec/" + name.replace("\\", "/").lstrip("/")
        self._call("PUT", f"/v1/policies/{policy_id}", text.encode(), "text/plain")

    def set_data(self, data: dict[str, Any]) -> None:
        """Replace the base document under the top-level keys mlspec uses."""
        for key, value in data.items():
            self._call("PUT", f"/v1/data/{key}", json.dumps(value).encode(), "application/json")

    def evaluate(self, query: str, input_document: Any) -> Any:
        """POST /v1/data/<path> with the input; None when undefined."""
        path = query.removeprefix("data").lstrip(".").replace(".", "/")
        answer = self._call(
            "POST", f"/v1/data/{path}", json.dumps({"input": input_document}).encode(), "application/json"
        )
        return answer.get("result")
