"""Jinja2 in a sandbox, for the few artifacts that are code (Feast definitions).

Spec text only ever enters as data: every value goes through the ``py`` filter,
which writes a Python literal with ``repr``, so no spec can inject template or
Python code. Undefined names are errors (StrictUndefined).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def python_literal(value: Any) -> str:
    """A Python literal for plain data (str, int, float, bool, None, lists, dicts of them)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in sorted(value.items())) + "}"
    raise TypeError(f"not plain data: {type(value).__name__}")


def identifier(name: str, prefix: str) -> str:
    """A Python identifier for a spec name (``customer-txn-stats`` -> ``fv_customer_txn_stats``)."""
    candidate = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
    if not _IDENTIFIER.match(candidate):
        raise ValueError(f"cannot make an identifier of {name!r}")
    return candidate


@cache
def _environment() -> Any:
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["py"] = python_literal
    return env


def render_template(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` with ``context`` in the sandbox."""
    text: str = _environment().get_template(name).render(**context)
    return text
