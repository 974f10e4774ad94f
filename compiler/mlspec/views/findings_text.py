"""Check results for people and for CI logs: text, JSON and GitHub Actions annotations."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from mlspec.diagnostics import Diagnostic
from mlspec.policy.findings import Finding
from mlspec.views.diagnostics_json import diagnostic_dict
from mlspec.views.diagnostics_text import SourceCache
from mlspec.views.style import Style

SCHEMA_VERSION = 1


def render_findings_text(findings: Sequence[Finding], style: Style) -> str:
    """One block per finding, grouped by environment, with the source line."""
    sources = SourceCache()
    lines: list[str] = []
    current = None
    for f in findings:
        if f.environment != current:
            current = f.environment
            lines.append(style(f"── environment {current}", "bold"))
        if f.status == "waived":
            label, colour = "waived", "dim"
        else:
            label, colour = ("deny", "red") if f.severity == "deny" else ("warn", "yellow")
        tag = style(f"{label}[{f.policy}]", colour, "bold")
        lines.append(f"{style(str(f.location), 'bold')}: {tag}: {f.message} ({f.resource})")
        source = sources.line(f.location.file, f.location.line)
        if source is not None and f.status != "waived":
            lines.append(style(f"{f.location.line:>5} | ", "blue") + source)
        if f.status == "waived":
            lines.append(f"      {style('= waived by', 'cyan')} {f.waiver}")
        elif f.hint:
            lines.append(f"      {style('= fix:', 'cyan')} {f.hint}")
    return "\n".join(lines)


def summary_line(findings: Sequence[Finding], environments: Sequence[str]) -> str:
    """``3 denied, 1 warning, 2 waived in 4 environments``."""
    denied = sum(1 for f in findings if f.blocking)
    warnings = sum(1 for f in findings if f.severity == "warn" and f.status == "failed")
    waived = sum(1 for f in findings if f.status == "waived")
    return f"{denied} denied, {warnings} warning(s), {waived} waived in {len(environments)} environment(s)"


def finding_dict(f: Finding) -> dict[str, object]:
    """One finding as a JSON-ready mapping."""
    return {
        "policy": f.policy,
        "severity": f.severity,
        "status": f.status,
        "message": f.message,
        "resource": f.resource,
        "environment": f.environment,
        "file": f.location.file,
        "line": f.location.line,
        "column": f.location.column,
        "path": f.path,
        "fix": f.hint,
        "waiver": f.waiver or None,
    }


def render_check_json(
    diagnostics: Iterable[Diagnostic], findings: Sequence[Finding], environments: Sequence[str], ok: bool
) -> str:
    """The whole check as a versioned JSON document."""
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "ok": ok,
            "environments": list(environments),
            "diagnostics": [diagnostic_dict(d) for d in diagnostics],
            "findings": [finding_dict(f) for f in findings],
        },
        indent=2,
    )


def _escape(value: str, *, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if prop else value


def render_github(diagnostics: Iterable[Diagnostic], findings: Sequence[Finding]) -> str:
    """GitHub Actions workflow commands: one ::error or ::warning annotation per problem."""
    lines = []
    for d in diagnostics:
        level = "error" if d.severity == "error" else "warning"
        where = f"file={_escape(d.location.file, prop=True)},line={d.location.line},col={d.location.column}"
        lines.append(f"::{level} {where},title={_escape(f'mlspec {d.code}', prop=True)}::{_escape(d.message)}")
    for f in findings:
        if f.status == "waived":
            continue
        level = "error" if f.severity == "deny" else "warning"
        where = f"file={_escape(f.location.file, prop=True)},line={f.location.line},col={f.location.column}"
        title = _escape(f"{f.policy} ({f.environment})", prop=True)
        lines.append(f"::{level} {where},title={title}::{_escape(f.message + (' — ' + f.hint if f.hint else ''))}")
    return "\n".join(lines)
