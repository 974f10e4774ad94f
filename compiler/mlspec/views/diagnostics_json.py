"""Diagnostics for machines: a stable, versioned JSON document."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mlspec.diagnostics import Diagnostic

SCHEMA_VERSION = 1


def diagnostic_dict(d: Diagnostic) -> dict[str, Any]:
    """One diagnostic as a JSON-ready mapping."""
    return {
        "code": d.code,
        "severity": d.severity,
        "message": d.message,
        "file": d.location.file,
        "line": d.location.line,
        "column": d.location.column,
        "path": d.path,
        "hint": d.hint,
        "related": [{"file": r.file, "line": r.line, "column": r.column} for r in d.related],
    }


def render_json(diagnostics: Iterable[Diagnostic], *, files: int, specs: int) -> str:
    """The whole validation report as JSON text."""
    items = [diagnostic_dict(d) for d in diagnostics]
    errors = sum(1 for d in items if d["severity"] == "error")
    report = {
        "schema_version": SCHEMA_VERSION,
        "ok": errors == 0,
        "summary": {"files": files, "specs": specs, "errors": errors, "warnings": len(items) - errors},
        "diagnostics": items,
    }
    return json.dumps(report, indent=2, sort_keys=False)
