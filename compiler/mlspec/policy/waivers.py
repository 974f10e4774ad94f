"""Waivers: a named policy, named resources, a reason, an approver and an expiry, the same everywhere.

Active waivers mark matching findings as waived (still reported). An expired
waiver waives nothing and is itself a deny; one about to expire, or that matches
nothing, is a warning.
"""

from __future__ import annotations

import datetime as dt

from mlspec.policy.findings import Finding
from mlspec.spec.validate import ParsedSpec
from mlspec.spec.waiver import Waiver

EXPIRY_WARNING_DAYS = 30


def apply_waivers(
    findings: list[Finding], waivers: tuple[ParsedSpec[Waiver], ...], environment: str, today: dt.date
) -> list[Finding]:
    """Mark waived findings and add findings about the waivers themselves."""
    out: list[Finding] = []
    used: set[str] = set()
    active = [w for w in waivers if w.model.spec.expires >= today]
    for finding in findings:
        match = next(
            (w for w in active if w.model.spec.policy == finding.policy and finding.resource in w.model.spec.resources),
            None,
        )
        if match is None:
            out.append(finding)
        else:
            used.add(match.ref)
            out.append(finding.waived_by(match.ref))
    for waiver in waivers:
        model = waiver.model
        expires = model.spec.expires
        location = waiver.document.locate(("spec", "expires"))
        if expires < today:
            out.append(
                Finding(
                    "waiver.expired",
                    "deny",
                    f"waiver '{waiver.name}' for {model.spec.policy} expired on {expires.isoformat()}",
                    waiver.ref,
                    environment,
                    location,
                    "spec.expires",
                    f"fix what {model.spec.policy} reports, or renew the waiver with a new approval",
                )
            )
        elif (expires - today).days <= EXPIRY_WARNING_DAYS:
            out.append(
                Finding(
                    "waiver.expiring",
                    "warn",
                    f"waiver '{waiver.name}' for {model.spec.policy} expires on {expires.isoformat()} "
                    f"({(expires - today).days} days)",
                    waiver.ref,
                    environment,
                    location,
                    "spec.expires",
                    "fix the underlying finding before then, or renew the waiver",
                )
            )
        elif waiver.ref not in used:
            out.append(
                Finding(
                    "waiver.unused",
                    "warn",
                    f"waiver '{waiver.name}' matches no finding of {model.spec.policy} in '{environment}'",
                    waiver.ref,
                    environment,
                    waiver.document.locate(("spec", "policy")),
                    "spec.policy",
                    "remove it, or correct its policy id and resources",
                )
            )
    return out
