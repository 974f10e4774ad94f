"""Views of the compliance report: markdown (people, pull requests), JSON (machines), HTML (auditors).

Each depends only on the report: no timestamps, stable order, the same report gives the same
bytes. The HTML page is self-contained (inline style, no scripts, no external assets) and
escapes every value.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from typing import Any

from mlspec.report.compliance import ComplianceReport, Control, PolicyResult
from mlspec.report.controls import ISO_CONTROLS, PDPL_ARTICLES

SCHEMA_VERSION = 1


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _mark(ok: bool) -> str:
    return "ok" if ok else "**FAIL**"


def _control(control: Control) -> str:
    return f"{_mark(control.ok)}: {_cell(control.detail)}"


def _verdict(report: ComplianceReport) -> str:
    if report.errors:
        return "not compliant: the specs do not resolve"
    problems = []
    if report.residency_violations:
        problems.append(f"{len(report.residency_violations)} hop(s) outside the data residency")
    if report.unprotected:
        problems.append(f"{len(report.unprotected)} hop(s) not encrypted at rest or in transit")
    if report.blocking:
        problems.append(f"{len(report.blocking)} un-waived deny finding(s)")
    return "not compliant: " + ", ".join(problems) if problems else "compliant"


def _results(results: tuple[PolicyResult, ...]) -> str:
    return "; ".join(
        f"`{r.policy}`: {_cell(r.message)}" + (f" (waived by `{r.waiver}`)" if r.waiver else "") for r in results
    )


def render_markdown(report: ComplianceReport) -> str:
    """The report as GitHub-flavoured markdown."""
    lines = [f"# Compliance report: `{report.project}` / `{report.environment}`", ""]
    if report.errors:
        lines += [f"**Result: {_verdict(report)}**", "", *(f"- `{_cell(e)}`" for e in report.errors), ""]
        return "\n".join(lines)
    lines += [
        f"**Result: {_verdict(report)}**",
        "",
        "| environment | tier | region | jurisdiction | allowed regions | KMS key | TLS |",
        "|---|---|---|---|---|---|---|",
        f"| `{report.environment}` | {report.tier} | {report.region} | {report.jurisdiction} | "
        f"{', '.join(report.allowed_regions)} | {report.kms_key or '**none**'} | {report.tls} |",
        "",
    ]
    if report.as_of:
        lines += [f"Waivers judged as of {report.as_of}.", ""]
    lines += [
        f"{len(report.resources)} resource(s) hold or derive from confidential or pii data; "
        f"{len(report.policies)} policies evaluated: {', '.join(f'`{p}`' for p in report.policies)}.",
        "",
        "## Hops: regions and encryption",
        "",
        "| hop | stage | class | regions | residency | at rest | in transit | spec |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for hop in report.hops:
        residency = "ok" if hop.in_residency else f"**OUTSIDE: {', '.join(hop.outside_residency)}**"
        lines.append(
            f"| `{hop.ref}` | {hop.stage} | {hop.classification} | {', '.join(hop.regions)} | {residency} | "
            f"{_control(hop.at_rest)} | {_control(hop.in_transit)} | `{hop.file}:{hop.line}` |"
        )
    lines += ["", "## Lineage and policies per resource", ""]
    for res in report.resources:
        lines += [f"### `{res.ref}` ({res.classification})", ""]
        lines.append("- lineage: " + " → ".join(", ".join(f"`{r}`" for r in refs) for _stage, refs in res.lineage))
        lines.append(f"- failed: {_results(res.failed) or 'none'}")
        if res.warned:
            lines.append(f"- warnings: {_results(res.warned)}")
        if res.waived:
            lines.append(f"- waived: {_results(res.waived)}")
        lines += [f"- passed ({len(res.passed)}): {', '.join(f'`{p}`' for p in res.passed) or 'none'}", ""]
    lines += ["## Waivers in force", ""]
    if report.waivers:
        lines += ["| waiver | policy | resources | approved by | expires | status | waives here | reason |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for w in report.waivers:
            lines.append(
                f"| `{w.ref}` | `{w.policy}` | {', '.join(f'`{r}`' for r in w.resources)} | {_cell(w.approved_by)} | "
                f"{w.expires} | {w.status} | {', '.join(w.waives) or 'nothing'} | {_cell(w.reason)} |"
            )
    else:
        lines.append("None.")
    lines.append("")
    lines += [
        "## Controls evidenced",
        "",
        "ISO/IEC 27001:2022 Annex A controls and UAE PDPL (Federal Decree-Law No. 45 of 2021) articles each check of "
        "this report gives evidence for (mlspec's mapping, for the auditor to start from).",
        "",
        "| check | ISO/IEC 27001:2022 Annex A | UAE PDPL | holds | evidence |",
        "|---|---|---|---|---|",
    ]
    for control in report.controls:
        iso = "; ".join(f"{c} {ISO_CONTROLS[c]}" for c in control.iso)
        pdpl = "; ".join(f"{a} {PDPL_ARTICLES[a]}" for a in control.pdpl)
        lines.append(
            f"| {control.check} | {iso} | {pdpl} | {'yes' if control.ok else '**NO**'} | {_cell(control.evidence)} |"
        )
    lines.append("")
    if report.environment_findings:
        lines += ["## Environment findings", "", *(f"- {_results((r,))}" for r in report.environment_findings), ""]
    if report.blocking:
        lines += ["## Blocking findings", "", "| policy | resource | message |", "|---|---|---|"]
        lines += [f"| `{r.policy}` | `{r.resource}` | {_cell(r.message)} |" for r in report.blocking]
        lines.append("")
    return "\n".join(lines)


def report_dict(report: ComplianceReport) -> dict[str, Any]:
    """The report as JSON-ready data."""
    data = asdict(report)
    for hop in data["hops"]:
        hop["in_residency"] = not hop["outside_residency"]
    for res in data["resources"]:
        res["lineage"] = [{"stage": stage, "refs": list(refs)} for stage, refs in res["lineage"]]
    return {"schema_version": SCHEMA_VERSION, "ok": report.ok, "verdict": _verdict(report), **data}


def render_json(report: ComplianceReport) -> str:
    """The report as JSON text."""
    return json.dumps(report_dict(report), indent=2) + "\n"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}table{border-collapse:collapse;margin:1rem 0}"
    "td,th{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}"
    "code{font-family:ui-monospace,monospace}.fail{color:#b3261e;font-weight:bold}.ok{color:#1a7f37}"
)


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _h_control(control: Control) -> str:
    css = "ok" if control.ok else "fail"
    return f'<span class="{css}">{"ok" if control.ok else "FAIL"}</span>: {_h(control.detail)}'


def _h_results(results: tuple[PolicyResult, ...]) -> str:
    return "<br>".join(
        f"<code>{_h(r.policy)}</code>: {_h(r.message)}"
        + (f" (waived by <code>{_h(r.waiver)}</code>)" if r.waiver else "")
        for r in results
    )


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def render_html(report: ComplianceReport) -> str:
    """The report as one self-contained HTML page."""
    title = f"Compliance report: {report.project} / {report.environment}"
    verdict = _verdict(report)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        f'<p class="{"ok" if report.ok else "fail"}">Result: {_h(verdict)}</p>',
    ]
    if report.errors:
        out += ["<ul>", *(f"<li><code>{_h(e)}</code></li>" for e in report.errors), "</ul></body></html>", ""]
        return "\n".join(out)
    out += [
        "<table>",
        _row(["environment", "tier", "region", "jurisdiction", "allowed regions", "KMS key", "TLS"], "th"),
        _row(
            [
                _h(report.environment),
                _h(report.tier),
                _h(report.region),
                _h(report.jurisdiction),
                _h(", ".join(report.allowed_regions)),
                _h(report.kms_key) if report.kms_key else '<span class="fail">none</span>',
                _h(report.tls),
            ]
        ),
        "</table>",
    ]
    if report.as_of:
        out.append(f"<p>Waivers judged as of {_h(report.as_of)}.</p>")
    out.append(f"<p>Policies evaluated: {', '.join(f'<code>{_h(p)}</code>' for p in report.policies)}.</p>")
    out += ["<h2>Hops: regions and encryption</h2>", "<table>"]
    out.append(_row(["hop", "stage", "class", "regions", "residency", "at rest", "in transit", "spec"], "th"))
    for hop in report.hops:
        residency = (
            '<span class="ok">ok</span>'
            if hop.in_residency
            else f'<span class="fail">OUTSIDE: {_h(", ".join(hop.outside_residency))}</span>'
        )
        out.append(
            _row(
                [
                    f"<code>{_h(hop.ref)}</code>",
                    _h(hop.stage),
                    _h(hop.classification),
                    _h(", ".join(hop.regions)),
                    residency,
                    _h_control(hop.at_rest),
                    _h_control(hop.in_transit),
                    f"<code>{_h(hop.file)}:{hop.line}</code>",
                ]
            )
        )
    out += ["</table>", "<h2>Lineage and policies per resource</h2>"]
    for res in report.resources:
        lineage = " &rarr; ".join(", ".join(f"<code>{_h(r)}</code>" for r in refs) for _stage, refs in res.lineage)
        out += [f"<h3><code>{_h(res.ref)}</code> ({_h(res.classification)})</h3>", "<ul>"]
        out.append(f"<li>lineage: {lineage}</li>")
        out.append(f"<li>failed: {_h_results(res.failed) or 'none'}</li>")
        if res.warned:
            out.append(f"<li>warnings: {_h_results(res.warned)}</li>")
        if res.waived:
            out.append(f"<li>waived: {_h_results(res.waived)}</li>")
        passed = ", ".join(f"<code>{_h(p)}</code>" for p in res.passed) or "none"
        out += [f"<li>passed ({len(res.passed)}): {passed}</li>", "</ul>"]
    out.append("<h2>Waivers in force</h2>")
    if report.waivers:
        out += ["<table>", _row(["waiver", "policy", "resources", "approved by", "expires", "status", "reason"], "th")]
        for w in report.waivers:
            cells = [w.ref, w.policy, ", ".join(w.resources), w.approved_by, w.expires, w.status, w.reason]
            out.append(_row([_h(c) for c in cells]))
        out.append("</table>")
    else:
        out.append("<p>None.</p>")
    out += ["<h2>Controls evidenced</h2>", "<table>"]
    out.append(_row(["check", "ISO/IEC 27001:2022 Annex A", "UAE PDPL", "holds", "evidence"], "th"))
    for control in report.controls:
        iso = "; ".join(f"{c} {ISO_CONTROLS[c]}" for c in control.iso)
        pdpl = "; ".join(f"{a} {PDPL_ARTICLES[a]}" for a in control.pdpl)
        holds = '<span class="ok">yes</span>' if control.ok else '<span class="fail">NO</span>'
        out.append(_row([_h(control.check), _h(iso), _h(pdpl), holds, _h(control.evidence)]))
    out.append("</table>")
    if report.blocking:
        out += ["<h2>Blocking findings</h2>", "<table>", _row(["policy", "resource", "message"], "th")]
        out += [
            _row([f"<code>{_h(r.policy)}</code>", f"<code>{_h(r.resource)}</code>", _h(r.message)])
            for r in report.blocking
        ]
        out.append("</table>")
    out += ["</body></html>", ""]
    return "\n".join(out)
