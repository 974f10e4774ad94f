"""SARIF 2.1.0 for GitHub code scanning: one rule per policy id or diagnostic code, waived results suppressed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from mlspec import __version__
from mlspec.diagnostics import Diagnostic, Location
from mlspec.policy.findings import Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _location(location: Location) -> dict[str, Any]:
    region: dict[str, Any] = {"startLine": max(location.line, 1)}
    if location.column > 0:
        region["startColumn"] = location.column
    return {"physicalLocation": {"artifactLocation": {"uri": location.file.replace("\\", "/")}, "region": region}}


def render_sarif(diagnostics: Iterable[Diagnostic], findings: Sequence[Finding]) -> str:
    """A SARIF log with one run of the mlspec tool."""
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for d in diagnostics:
        rules.setdefault(d.code, {"id": d.code, "shortDescription": {"text": f"spec problem: {d.code}"}})
        result: dict[str, Any] = {
            "ruleId": d.code,
            "level": "error" if d.severity == "error" else "warning",
            "message": {"text": d.message + (f" ({d.hint})" if d.hint else "")},
            "locations": [_location(d.location)],
        }
        results.append(result)
    for f in findings:
        rules.setdefault(
            f.policy,
            {"id": f.policy, "shortDescription": {"text": f"policy {f.policy}"}, "help": {"text": f.hint or f.policy}},
        )
        result = {
            "ruleId": f.policy,
            "level": "error" if f.severity == "deny" else "warning",
            "message": {"text": f"{f.message} [{f.resource} in {f.environment}]"},
            "locations": [_location(f.location)],
            "properties": {"environment": f.environment, "resource": f.resource},
        }
        if f.status == "waived":
            result["suppressions"] = [{"kind": "external", "justification": f"waived by {f.waiver}"}]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "mlspec",
                        "version": __version__,
                        "informationUri": "https://mlspec.dev",
                        "rules": sorted(rules.values(), key=lambda r: r["id"]),
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2)
