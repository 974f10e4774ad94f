"""A rehearsal report as a terminal table or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlspec.app.rehearsal import RehearsalReport

LOG_TAIL_LINES = 25


def rehearsal_text(report: RehearsalReport, log_tail: str = "") -> str:
    """What ran, how long each took, and the failing step's log tail."""
    lines = [
        f"Rehearsal of '{report.environment}' in {report.image}",
        f"  stand-in stores seeded with {report.seeded_bytes / 1e6:.1f} MB of sample data; files in {report.workdir}",
        "",
        f"  {'step':<28} {'kind':<12} {'result':<7} {'seconds':>8}",
    ]
    for step in report.steps:
        result = "ok" if step.ok else "FAILED"
        lines.append(f"  {step.name:<28} {step.kind:<12} {result:<7} {step.seconds:>8.1f}")
    total = sum(step.seconds for step in report.steps)
    lines.append(f"  {'total':<28} {'':<12} {'':<7} {total:>8.1f}")
    failed = next((step for step in report.steps if not step.ok), None)
    if failed is not None:
        lines += ["", f"{failed.name} failed; the end of its log ({failed.log}):", log_tail]
    else:
        lines += ["", f"Everything '{report.environment}' runs in its cluster ran to completion here."]
    return "\n".join(lines)


def rehearsal_json(report: RehearsalReport) -> str:
    """The report as JSON (``ok`` included)."""
    return json.dumps({**asdict(report), "ok": report.ok}, indent=2, sort_keys=True)
