"""One pull-request comment: check findings and the plan of each environment, short enough to read.

The comment starts with a hidden marker (``<!-- mlspec:comment project=NAME -->``) so a CI
step can find the comment it posted before and update it. The text depends only on its
inputs (no timestamps, stable order): the same specs give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlspec.diagnostics import Diagnostic
from mlspec.plan.model import SYMBOLS
from mlspec.policy.findings import Finding
from mlspec.views.plan import policy_cell as _policy_cell

if TYPE_CHECKING:
    from mlspec.app.planning import PlanResult
    from mlspec.app.validation import CheckResult
    from mlspec.gitops.changes import BranchReport

COMMENT_LIMIT = 60_000  # GitHub caps comments at 65,536 characters
FINDINGS_SHOWN = 15  # per list
CHANGES_SHOWN = 25  # per environment
FIELDS_SHOWN = 8  # per change


def marker(project: str) -> str:
    """The hidden first line a CI step looks for to update its previous comment."""
    return f"<!-- mlspec:comment project={project} -->"


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _more(total: int, shown: int, what: str) -> list[str]:
    return [f"_… and {total - shown} more {what}_", ""] if total > shown else []


def _finding_rows(findings: Sequence[Finding], limit: int) -> list[str]:
    rows = ["| policy | resource | environment | where | message |", "|---|---|---|---|---|"]
    for f in findings[:limit]:
        where = f"{f.location.file}:{f.location.line}" if f.location.line > 0 else f.location.file
        message = f.message + (f" — fix: {f.hint}" if f.hint and f.status == "failed" else "")
        if f.status == "waived":
            message += f" (waived by {f.waiver})"
        rows.append(f"| `{f.policy}` | `{f.resource}` | `{f.environment}` | `{_cell(where)}` | {_cell(message)} |")
    return [*rows, "", *_more(len(findings), min(limit, len(findings)), "findings")]


def _diagnostic_rows(diagnostics: Sequence[Diagnostic], limit: int) -> list[str]:
    rows = ["| code | where | message |", "|---|---|---|"]
    for d in diagnostics[:limit]:
        message = d.message + (f" — fix: {d.hint}" if d.hint else "")
        rows.append(f"| `{d.code}` | `{_cell(d.location)}` | {_cell(message)} |")
    return [*rows, "", *_more(len(diagnostics), min(limit, len(diagnostics)), "errors")]


def _env_check(findings: Sequence[Finding], environment: str, checked: bool) -> str:
    if not checked:
        return "not checked"
    mine = [f for f in findings if f.environment == environment]
    denied = sum(1 for f in mine if f.blocking)
    warned = sum(1 for f in mine if f.severity == "warn" and f.status == "failed")
    waived = sum(1 for f in mine if f.status == "waived")
    mark = ":x:" if denied else ":white_check_mark:"
    return f"{mark} {denied} denied, {warned} warning(s), {waived} waived"


def _plan_details(environment: str, result: PlanResult) -> list[str]:
    plan = result.plan
    if plan is None:
        errors = sum(1 for d in result.diagnostics if d.severity == "error")
        return [f"**`{environment}`**: no plan: {errors} error(s) (listed above)", ""]
    pending = plan.pending
    breaking = sum(1 for c in pending if c.classification == "breaking")
    title = f"<code>{environment}</code>: {plan.summary()}" + (f" — {breaking} breaking" if breaking else "")
    if not pending:
        return [f"**`{environment}`**: no changes ({plan.counts()['noop']} unchanged)", ""]
    out = [
        f"<details><summary>{title}</summary>",
        "",
        "| | resource | class | policy | why |",
        "|---|---|---|---|---|",
    ]
    shown = pending[:CHANGES_SHOWN]
    for change in shown:
        reason = "; ".join(change.reasons)
        policy = _policy_cell([f for f in result.findings if f.resource == change.ref])
        out.append(
            f"| `{SYMBOLS[change.action]}` | `{change.ref}` | {change.classification} | {policy} | {_cell(reason)} |"
        )
    out.append("")
    out += _more(len(pending), len(shown), "changes")
    with_fields = [c for c in shown if c.fields]
    if with_fields:
        out += ["```diff"]
        for change in with_fields:
            out.append(f"{SYMBOLS[change.action] if change.action != 'update' else '!'} {change.ref}")
            out.extend(f"  {f.path}: {_short(f.before)} -> {_short(f.after)}" for f in change.fields[:FIELDS_SHOWN])
            if len(change.fields) > FIELDS_SHOWN:
                out.append(f"  … and {len(change.fields) - FIELDS_SHOWN} more fields")
        out += ["```", ""]
    out += [f"<sub>plan {plan.plan_hash[:12]} at {plan.revision[:12]} · {plan.counts()['noop']} unchanged</sub>", ""]
    out += ["</details>", ""]
    return out


def render_comment(report: BranchReport) -> str:
    """The pull-request comment in markdown, from a branch report (see mlspec.gitops.changes.branch_report)."""
    return render_comment_parts(
        report.project, report.check, report.plans, scope=report.scope, nothing_changed=report.nothing_changed
    )


def render_comment_parts(
    project: str,
    check: CheckResult,
    plans: Mapping[str, PlanResult],
    *,
    scope: str = "",
    nothing_changed: bool = False,
) -> str:
    """The pull-request comment in markdown.

    ``plans`` maps each environment to its plan (possibly filtered to a branch's
    changes); ``scope`` is a line saying what the comment is limited to, and
    ``nothing_changed`` says the branch changes no spec at all.
    """
    errors = [d for d in check.diagnostics if d.severity == "error"]
    ordered = sorted(check.findings, key=Finding.sort_key)
    blocking = [f for f in ordered if f.blocking]
    others = [f for f in ordered if not f.blocking]
    others.sort(key=lambda f: (f.status == "waived", *f.sort_key()))  # warnings before waived
    failed_plans = [env for env, r in plans.items() if r.plan is None]
    problems = len(errors) + len(blocking)
    if problems:
        headline = f":x: {len(blocking)} blocking finding(s)" + (f", {len(errors)} error(s)" if errors else "")
    elif failed_plans:
        headline = f":x: no plan for {', '.join(failed_plans)}"
    else:
        headline = ":white_check_mark: no blocking findings"
    out = [marker(project), f"### mlspec: `{project}` — {headline}", ""]
    if scope:
        out += [f"_{scope}_", ""]
    if nothing_changed:
        out += ["No spec changes: nothing to check or plan.", ""]
        return "\n".join(out).rstrip("\n") + "\n"

    checked = set(check.environments)
    out += [
        "| environment | check | create | update | delete | unchanged | breaking |",
        "|---|---|---|---|---|---|---|",
    ]
    for env in sorted(set(plans) | checked):
        status = _env_check(check.findings, env, env in checked)
        result = plans.get(env)
        if result is None or result.plan is None:
            counts = "| — | — | — | — | — |" if result is None else "| no plan | | | | |"
        else:
            c = result.plan.counts()
            breaking = sum(1 for ch in result.plan.pending if ch.classification == "breaking")
            counts = f"| {c['create']} | {c['update']} | {c['delete']} | {c['noop']} | {breaking} |"
        out.append(f"| `{env}` | {status} {counts}")
    out.append("")

    if errors:
        out += [f"#### :x: Errors ({len(errors)})", "", *_diagnostic_rows(errors, FINDINGS_SHOWN)]
    if blocking:
        out += [f"#### :x: Blocking findings ({len(blocking)})", "", *_finding_rows(blocking, FINDINGS_SHOWN)]
    if others:
        out += [
            f"<details><summary>Warnings and waived findings ({len(others)})</summary>",
            "",
            *_finding_rows(others, FINDINGS_SHOWN),
            "</details>",
            "",
        ]
    if plans:
        out += ["#### Plans", ""]
        for env in sorted(plans):
            out += _plan_details(env, plans[env])
    text = "\n".join(out).rstrip("\n") + "\n"
    if len(text) > COMMENT_LIMIT:
        cut = text[:COMMENT_LIMIT].rsplit("\n", 1)[0]
        if cut.count("```") % 2:
            cut += "\n```"
        if cut.count("<details>") > cut.count("</details>"):
            cut += "\n\n</details>"
        text = cut + "\n\n… truncated: run `mlspec check` and `mlspec plan` for everything.\n"
    return text
