"""Plans for people (terminal), pull requests (markdown, collapsible) and machines (JSON).

Each view shows the plan's policy findings beside the changes they concern (denies,
warnings and waived findings), then the findings about no pending change (expired
and expiring waivers among them), and the verdict: whether apply would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlspec.plan.model import SYMBOLS, Plan
from mlspec.policy.findings import Finding
from mlspec.views.style import Style

COLOURS = {"create": "green", "update": "yellow", "delete": "red", "noop": "dim"}
MARKDOWN_LIMIT = 60_000  # GitHub caps comments at 65,536 characters


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _label(f: Finding) -> str:
    if f.status == "waived":
        return "waived"
    return "deny" if f.severity == "deny" else "warn"


def _finding_text(f: Finding, style: Style) -> str:
    label = _label(f)
    colour = {"deny": "red", "warn": "yellow", "waived": "dim"}[label]
    waived = f" (waived by {f.waiver})" if f.status == "waived" else ""
    return style(f"{label}[{f.policy}]", colour, "bold") + f" {f.message}{waived} ({f.location})"


def _by_resource(plan: Plan) -> tuple[dict[str, list[Finding]], list[Finding]]:
    """Findings per pending change's ref, and the findings about no pending change."""
    pending = {c.ref for c in plan.pending}
    beside: dict[str, list[Finding]] = {}
    others: list[Finding] = []
    for f in sorted(plan.findings, key=Finding.sort_key):
        if f.resource in pending:
            beside.setdefault(f.resource, []).append(f)
        else:
            others.append(f)
    return beside, others


def policy_summary(findings: Sequence[Finding]) -> str:
    """``Policy: 2 denied, 1 warning(s), 3 waived; apply would refuse this plan``."""
    denied = sum(1 for f in findings if f.blocking)
    warnings = sum(1 for f in findings if f.severity == "warn" and f.status == "failed")
    waived = sum(1 for f in findings if f.status == "waived")
    verdict = "apply would refuse this plan" if denied else "nothing blocks apply"
    return f"Policy: {denied} denied, {warnings} warning(s), {waived} waived; {verdict}"


def render_plan_text(plan: Plan, style: Style, *, explain: bool = True) -> str:
    """Terminal view: one line per change with its class, field changes and policy findings indented, then the
    findings about nothing that changes, and the summaries."""
    beside, others = _by_resource(plan)
    lines = [style(f"mlspec plan: environment {plan.environment} at {plan.revision[:12]}", "bold")]
    for change in plan.pending:
        colour = COLOURS[change.action]
        tag = "" if change.classification == "safe" else f"  [{change.classification}]"
        lines.append(
            style(f"  {SYMBOLS[change.action]} {change.ref}", colour)
            + style(tag, "red" if change.classification == "breaking" else "cyan")
        )
        for field in change.fields[:20]:
            lines.append(f"      {field.path}: {_short(field.before)} -> {_short(field.after)}")
        if len(change.fields) > 20:
            lines.append(f"      ... and {len(change.fields) - 20} more fields")
        if explain:
            lines.extend(style(f"      why: {reason}", "dim") for reason in change.reasons)
        lines.extend(f"      {_finding_text(f, style)}" for f in beside.get(change.ref, []))
    if plan.empty:
        lines.append("  No changes. The environment matches the specs.")
    if others:
        lines.append(style("  policy findings about resources this plan does not change:", "bold"))
        lines.extend(f"    {f.resource}: {_finding_text(f, style)}" for f in others)
    lines.append(style(plan.summary(), "bold"))
    # always shown: "0 denied" says the policies were evaluated, not skipped
    lines.append(style(policy_summary(plan.findings), "red" if plan.blocking else "green", "bold"))
    return "\n".join(lines)


def policy_cell(findings: Sequence[Finding]) -> str:
    """The findings about one change in a table cell: ``:x: 1 deny, 2 warn, 1 waived`` (empty when none)."""
    if not findings:
        return ""
    denied = sum(1 for f in findings if f.blocking)
    warned = sum(1 for f in findings if f.severity == "warn" and f.status == "failed")
    waived = sum(1 for f in findings if f.status == "waived")
    parts = [
        f":x: {denied} deny" if denied else "",
        f"{warned} warn" if warned else "",
        f"{waived} waived" if waived else "",
    ]
    return ", ".join(p for p in parts if p)


def _finding_rows(findings: Sequence[Finding]) -> list[str]:
    rows = ["| | policy | resource | where | message |", "|---|---|---|---|---|"]
    for f in findings:
        mark = {"deny": ":x:", "warn": ":warning:", "waived": ":white_check_mark:"}[_label(f)]
        message = f.message + (f" (waived by {f.waiver})" if f.status == "waived" else "")
        message = message.replace("|", "\\|")
        rows.append(f"| {mark} {_label(f)} | `{f.policy}` | `{f.resource}` | `{f.location}` | {message} |")
    return rows


def render_plan_markdown(plan: Plan) -> str:
    """A pull-request comment: summary first, details collapsed; cut short below GitHub's limit."""
    counts = plan.counts()
    breaking = [c for c in plan.pending if c.classification == "breaking"]
    beside, others = _by_resource(plan)
    out = [
        f"### mlspec plan: `{plan.environment}`",
        "",
        f"**{plan.summary()}**" + (f" — :warning: {len(breaking)} breaking" if breaking else ""),
    ]
    out += ["", f"**{policy_summary(plan.findings)}**"]
    out += ["", "| | resource | class | policy | why |", "|---|---|---|---|---|"]
    for change in plan.pending:
        reason = "; ".join(change.reasons).replace("|", "\\|")
        policy = policy_cell(beside.get(change.ref, []))
        out.append(f"| `{SYMBOLS[change.action]}` | `{change.ref}` | {change.classification} | {policy} | {reason} |")
    if plan.findings:
        ordered = [f for ref in (c.ref for c in plan.pending) for f in beside.get(ref, [])] + others
        out += ["", "<details><summary>Policy findings</summary>", "", *_finding_rows(ordered), "", "</details>"]
    if plan.pending:
        out += ["", "<details><summary>Field changes</summary>", "", "```diff"]
        for change in plan.pending:
            out.append(f"{SYMBOLS[change.action] if change.action != 'update' else '!'} {change.ref}")
            out.extend(f"  {f.path}: {_short(f.before)} -> {_short(f.after)}" for f in change.fields)
        out += ["```", "", "</details>"]
    out.append(f"\n<sub>plan {plan.plan_hash[:12]} · {counts['noop']} unchanged</sub>")
    text = "\n".join(out)
    if len(text) > MARKDOWN_LIMIT:
        text = (
            text[:MARKDOWN_LIMIT]
            + "\n\n… truncated: the full plan is in the job's artifacts (`mlspec plan --format json`)."
        )
    return text


def render_plan_json(plan: Plan) -> str:
    """The documented, versioned JSON form (the same document `--out` saves), findings included."""
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True)
