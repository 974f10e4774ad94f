"""Waivers: a named policy, named resources, a reason, an approver and an expiry, the same everywhere.

Active waivers mark matching findings as waived (still reported). An expired
waiver waives nothing and is itself a deny; one about to expire, or that matches
nothing, is a warning.

A waiver is also a deny that waives nothing when it runs longer than the environment's
``waivers.max_days`` (``waiver.too_long``), or, outside the local tier, when nobody the
environment trusts approved it (``waiver.unapproved``): its ``approved_by`` must be an
approver of the environment's ``access.approval`` and ``approvals`` (checked by the caller
against git: the commit that last changed the waiver's file, signed by that approver's key)
must name that approver. Anyone can write ``approved_by: ciso@bank.ae``; only the CISO's key
can sign for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from mlspec.policy.findings import Finding
from mlspec.spec.environment import Environment
from mlspec.spec.validate import ParsedSpec
from mlspec.spec.waiver import Waiver

EXPIRY_WARNING_DAYS = 30
TOO_LONG, UNAPPROVED = "waiver.too_long", "waiver.unapproved"


def approvers(environment: Environment) -> list[str]:
    """Who may approve a waiver in ``environment``: its ``access.approval`` approvers, groups expanded."""
    access = environment.spec.access
    if access is None or access.approval is None:
        return []
    return [member for name in access.approval.approvers for member in access.groups.get(name, [name])]


def _refusal(
    waiver: ParsedSpec[Waiver], environment: Environment, today: dt.date, approvals: Mapping[str, str]
) -> tuple[str, str]:
    """Why the waiver cannot count here, as (policy id, message); ("", "") when it can."""
    spec, name = waiver.model.spec, environment.metadata.name
    limit = environment.spec.waivers.max_days
    if (spec.expires - today).days > limit:
        return TOO_LONG, (
            f"waiver '{waiver.name}' runs until {spec.expires.isoformat()}, {(spec.expires - today).days} days from "
            f"now; environment '{name}' allows at most {limit} (waivers.max_days)"
        )
    if environment.spec.tier == "local":
        return "", ""
    allowed = approvers(environment)
    if spec.approved_by.lower() not in {a.lower() for a in allowed}:
        listed = ", ".join(allowed) or "nobody: it has no access.approval"
        return UNAPPROVED, (
            f"waiver '{waiver.name}' is approved_by {spec.approved_by!r}, who is not an approver of environment "
            f"'{name}' ({listed})"
        )
    if approvals.get(waiver.ref, "").lower() != spec.approved_by.lower():
        return UNAPPROVED, (
            f"waiver '{waiver.name}' carries no signature of {spec.approved_by}: the commit that last changed its "
            "file must be signed by that approver's key (a committed, unedited file)"
        )
    return "", ""


def apply_waivers(
    findings: list[Finding],
    waivers: tuple[ParsedSpec[Waiver], ...],
    environment: Environment,
    today: dt.date,
    approvals: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Mark waived findings and add findings about the waivers themselves. ``approvals``: waiver ref -> the
    approver whose signature it verifiably carries."""
    out: list[Finding] = []
    used: set[str] = set()
    env_name = environment.metadata.name
    refused = {w.ref: found for w in waivers if (found := _refusal(w, environment, today, approvals or {}))[0]}
    active = [w for w in waivers if w.model.spec.expires >= today and w.ref not in refused]
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
        policy, why = refused.get(waiver.ref, ("", ""))
        if policy and expires >= today:
            too_long = policy == TOO_LONG
            out.append(
                Finding(
                    policy,
                    "deny",
                    why + "; it waives nothing",
                    waiver.ref,
                    env_name,
                    location if too_long else waiver.document.locate(("spec", "approved_by")),
                    "spec.expires" if too_long else "spec.approved_by",
                    f"set expires within {environment.spec.waivers.max_days} days and renew it when it ends"
                    if too_long
                    else "have an approver of the environment sign the commit that adds the waiver "
                    "(git commit -S), with approved_by set to their key's fingerprint",
                )
            )
        elif expires < today:
            out.append(
                Finding(
                    "waiver.expired",
                    "deny",
                    f"waiver '{waiver.name}' for {model.spec.policy} expired on {expires.isoformat()}",
                    waiver.ref,
                    env_name,
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
                    env_name,
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
                    f"waiver '{waiver.name}' matches no finding of {model.spec.policy} in '{env_name}'",
                    waiver.ref,
                    env_name,
                    waiver.document.locate(("spec", "policy")),
                    "spec.policy",
                    "remove it, or correct its policy id and resources",
                )
            )
    return out
