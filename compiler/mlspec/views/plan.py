"""Plans for people (terminal), pull requests (markdown, collapsible) and machines (JSON)."""

from __future__ import annotations

import json
from typing import Any

from mlspec.plan.model import SYMBOLS, Plan
from mlspec.views.style import Style

COLOURS = {"create": "green", "update": "yellow", "delete": "red", "noop": "dim"}
MARKDOWN_LIMIT = 60_000  # GitHub caps comments at 65,536 characters


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def render_plan_text(plan: Plan, style: Style, *, explain: bool = True) -> str:
    """Terminal view: one line per change with its class, field changes indented, then the summary."""
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
    if plan.empty:
        lines.append("  No changes. The environment matches the specs.")
    lines.append(style(plan.summary(), "bold"))
    return "\n".join(lines)


def render_plan_markdown(plan: Plan) -> str:
    """A pull-request comment: summary first, details collapsed; cut short below GitHub's limit."""
    counts = plan.counts()
    breaking = [c for c in plan.pending if c.classification == "breaking"]
    out = [
        f"### mlspec plan: `{plan.environment}`",
        "",
        f"**{plan.summary()}**" + (f" — :warning: {len(breaking)} breaking" if breaking else ""),
        "",
        "| | resource | class | why |",
        "|---|---|---|---|",
    ]
    for change in plan.pending:
        reason = "; ".join(change.reasons).replace("|", "\\|")
        out.append(f"| `{SYMBOLS[change.action]}` | `{change.ref}` | {change.classification} | {reason} |")
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
    """The documented, versioned JSON form (the same document `--out` saves)."""
    return json.dumps(plan.to_dict(), indent=2, sort_keys=True)
