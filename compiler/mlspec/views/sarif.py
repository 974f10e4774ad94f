"""SARIF 2.1.0 for GitHub code scanning: one rule per policy id or diagnostic code, waived results suppressed.

A finding that holds in several environments is one result listing them. Every result carries a
partial fingerprint built from what identifies it (rule, resource, file, key path), not from its line
or its environments, so code scanning keeps tracking the same alert when lines move or an
environment is added.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlspec import __version__
from mlspec.diagnostics import Diagnostic, Location
from mlspec.policy.findings import Finding
from mlspec.views.sarif_rules import CODES_NOTE, WAIVER_NOTE, RuleText, diagnostic_rule, policy_rule

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_KEY = "mlspecFinding/v1"


@dataclass(slots=True)
class _Group:
    """The findings of one policy about one place of one resource, across environments."""

    first: Finding
    environments: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)


def _location(location: Location) -> dict[str, Any]:
    region: dict[str, Any] = {"startLine": max(location.line, 1)}
    if location.column > 0:
        region["startColumn"] = location.column
    return {"physicalLocation": {"artifactLocation": {"uri": location.file.replace("\\", "/")}, "region": region}}


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _descriptor(rule_id: str, text: RuleText, kind: str, note: str) -> dict[str, Any]:
    """A reportingDescriptor with the descriptions and help code scanning shows beside an alert."""
    markdown = f"**What it checks.** {text.checks}\n\n**How to fix.** {text.fix}\n\n{note}"
    return {
        "id": rule_id,
        "name": "".join(part.capitalize() for part in rule_id.replace("-", ".").replace("_", ".").split(".")),
        "shortDescription": {"text": text.summary},
        "fullDescription": {"text": text.checks},
        "help": {"text": f"{text.checks} How to fix: {text.fix} {note}", "markdown": markdown},
        "properties": {"tags": ["mlspec", kind]},
    }


def _group_findings(findings: Sequence[Finding]) -> list[_Group]:
    groups: dict[tuple[str, ...], _Group] = {}
    for f in findings:
        key = (f.policy, f.path, f.resource, f.location.file, f.severity, f.status, f.waiver)
        group = groups.setdefault(key, _Group(f))
        if f.environment not in group.environments:
            group.environments.append(f.environment)
            group.messages[f.environment] = f.message
    return list(groups.values())


def _finding_result(group: _Group) -> dict[str, Any]:
    f = group.first
    envs = ", ".join(group.environments)
    noun = "environment" if len(group.environments) == 1 else "environments"
    properties: dict[str, Any] = {"resource": f.resource, "environments": group.environments, "path": f.path}
    where = f"{f.resource}; {noun}: {envs}"
    if len(set(group.messages.values())) > 1:  # the same finding worded per environment: show the first, keep all
        properties["messages"] = group.messages
        where += f"; as worded for {f.environment}"
    result: dict[str, Any] = {
        "ruleId": f.policy,
        "level": "error" if f.severity == "deny" else "warning",
        "message": {"text": f"{f.message} [{where}]"},
        "locations": [_location(f.location)],
        "partialFingerprints": {
            FINGERPRINT_KEY: _fingerprint("policy", f.policy, f.resource, f.location.file, f.path, f.severity, f.status)
        },
        "properties": properties,
    }
    if f.status == "waived":
        result["suppressions"] = [{"kind": "external", "justification": f"waived by {f.waiver}"}]
    return result


def _diagnostic_results(diagnostics: Iterable[Diagnostic]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for d in dict.fromkeys(diagnostics):  # the same problem found while resolving several environments: once
        identity = _fingerprint("diagnostic", d.code, d.location.file, d.path, d.message)
        seen[identity] = seen.get(identity, 0) + 1
        result: dict[str, Any] = {
            "ruleId": d.code,
            "level": "error" if d.severity == "error" else "warning",
            "message": {"text": d.message + (f" ({d.hint})" if d.hint else "")},
            "locations": [_location(d.location)],
            "partialFingerprints": {FINGERPRINT_KEY: f"{identity}:{seen[identity]}"},
        }
        if d.related:
            result["relatedLocations"] = [
                {"id": i, **_location(r), "message": {"text": "also involved"}} for i, r in enumerate(d.related, 1)
            ]
        results.append(result)
    return results


def render_sarif(diagnostics: Iterable[Diagnostic], findings: Sequence[Finding]) -> str:
    """A SARIF log with one run of the mlspec tool."""
    diagnostic_list = list(diagnostics)
    rules: dict[str, dict[str, Any]] = {}
    for d in diagnostic_list:
        if d.code not in rules:
            rules[d.code] = _descriptor(d.code, diagnostic_rule(d.code), "spec", CODES_NOTE)
    for f in findings:
        if f.policy not in rules:
            rules[f.policy] = _descriptor(f.policy, policy_rule(f.policy, f.hint), "policy", WAIVER_NOTE)
    results = _diagnostic_results(diagnostic_list) + [_finding_result(g) for g in _group_findings(findings)]
    for result in results:  # a rule's default level: error when any of its results is one
        if result["level"] == "error" or "defaultConfiguration" not in rules[result["ruleId"]]:
            rules[result["ruleId"]]["defaultConfiguration"] = {"level": result["level"]}
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
