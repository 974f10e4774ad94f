"""Vulnerability report of the pinned dependencies (requirements/lock.txt) with pip-audit.

    .venv/bin/python scripts/audit_dependencies.py [-r requirements/lock.txt] [-o report.md] [--strict]

Runs ``pip-audit -r LOCK --no-deps --disable-pip -f json`` (the lock pins every package, so no
resolution and no pip install are needed; pip-audit asks PyPI's JSON API about each pin) and
writes a markdown table: package, version, vulnerability id, fix versions. It is a report: exit 0
whatever it finds, and when pip-audit cannot reach the vulnerability service; ``--strict`` exits 1
on any vulnerability (and 2 when the audit could not run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def pip_audit_command(lock: Path) -> list[str]:
    """The pip-audit invocation: the venv's own pip-audit next to this Python, else the one on PATH."""
    local = Path(sys.executable).parent / "pip-audit"
    binary = str(local) if local.exists() else (shutil.which("pip-audit") or "pip-audit")
    return [binary, "-r", str(lock), "--no-deps", "--disable-pip", "-f", "json", "--progress-spinner", "off"]


def run_audit(lock: Path, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report, or None and the reason it could not run."""
    try:
        proc = subprocess.run(
            pip_audit_command(lock), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO
        )
    except FileNotFoundError:
        return None, "pip-audit is not installed (pip install pip-audit, or the project's dev extra)"
    except subprocess.TimeoutExpired:
        return None, f"pip-audit did not finish within {timeout:g} s (is PyPI reachable?)"
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("WARNING:")]
        return None, (lines[-1] if lines else f"pip-audit exited {proc.returncode} without a report").strip()
    deps = report.get("dependencies", [])
    if deps and all("skip_reason" in d for d in deps):
        # pip-audit reports "not found on PyPI" for every pin when its vulnerability service cannot be reached
        return None, (
            f"pip-audit could audit none of the {len(deps)} pins ({deps[0]['skip_reason']}); "
            "is the PyPI JSON API (https://pypi.org/pypi/NAME/VERSION/json) reachable from here?"
        )
    return report, ""


def vulnerabilities(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(package, version, id, aliases, fix versions) for every vulnerability, sorted."""
    rows = []
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            rows.append(
                (
                    dep["name"],
                    dep.get("version", ""),
                    vuln["id"],
                    ", ".join(vuln.get("aliases", [])),
                    ", ".join(vuln.get("fix_versions", [])) or "none",
                )
            )
    return sorted(rows)


def skipped(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(package, reason) pip-audit could not audit."""
    return sorted((d["name"], d.get("skip_reason", "")) for d in report.get("dependencies", []) if "skip_reason" in d)


def render(lock: str, report: dict[str, Any] | None, problem: str) -> str:
    """The markdown report."""
    lines = [f"## Dependency vulnerability report (`{lock}`)", ""]
    if report is None:
        return "\n".join([*lines, f"**The audit could not run:** {problem}", "", "No result: this is not a pass.", ""])
    rows = vulnerabilities(report)
    skips = skipped(report)
    total = len(report.get("dependencies", []))
    audited = f"{total - len(skips)} of {total} pinned packages audited"
    if not rows:
        lines += [f"No known vulnerabilities ({audited}).", ""]
    else:
        lines += [f"{len(rows)} known vulnerability(ies) ({audited}).", ""]
        lines += ["| package | version | vulnerability | aliases | fix versions |", "|---|---|---|---|---|"]
        lines += [f"| {p} | {v} | {i} | {a} | {f} |" for p, v, i, a, f in rows]
        lines.append("")
    if skips:
        lines += ["Not audited:", "", *(f"- {name}: {reason}" for name, reason in skips), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Audit, write the report, and exit 0 (or, with --strict, 1 on any vulnerability)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--requirements", type=Path, default=REPO / "requirements" / "lock.txt")
    parser.add_argument("-o", "--output", type=Path, help="write the markdown report here (default: stdout)")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a vulnerability, 2 when the audit fails")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds pip-audit may run")
    args = parser.parse_args(argv)
    lock = args.requirements
    shown = lock.relative_to(REPO).as_posix() if lock.resolve().is_relative_to(REPO) else str(lock)
    report, problem = run_audit(lock, args.timeout)
    text = render(shown, report, problem)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    if report is None:
        print(f"audit-dependencies: the audit could not run: {problem}", file=sys.stderr)
        return 2 if args.strict else 0
    return 1 if args.strict and vulnerabilities(report) else 0


if __name__ == "__main__":
    sys.exit(main())
