"""Which ISO/IEC 27001:2022 Annex A controls and UAE PDPL articles each check of the compliance report evidences.

The mapping is mlspec's reading, for an auditor to start from, not a certification: each check of the report
(residency, encryption at rest, protection in transit, policy findings, waivers, lineage and classification)
names the Annex A controls (ISO/IEC 27001:2022, Annex A) and the articles of the UAE Personal Data Protection Law
(Federal Decree-Law No. 45 of 2021) it gives evidence for, whether it holds in this environment, and the report
rows that are the evidence. The PDPL excludes banking and credit personal data governed by its own legislation
(Article 2); a bank's auditor maps those rows to the Central Bank's rules instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlspec.report.compliance import ComplianceReport, Hop

ISO_CONTROLS = {
    "A.5.9": "Inventory of information and other associated assets",
    "A.5.12": "Classification of information",
    "A.5.14": "Information transfer",
    "A.5.31": "Legal, statutory, regulatory and contractual requirements",
    "A.5.34": "Privacy and protection of personal identifiable information (PII)",
    "A.5.36": "Compliance with policies, rules and standards for information security",
    "A.8.5": "Secure authentication",
    "A.8.20": "Networks security",
    "A.8.24": "Use of cryptography",
}
PDPL_ARTICLES = {
    "Art. 5": "Personal data processing controls",
    "Art. 7": "The controller's general obligations",
    "Art. 20": "Personal data security",
    "Art. 22": "Cross-border transfer where an adequate level of protection is available",
    "Art. 23": "Cross-border transfer where an adequate level of protection is not available",
}


@dataclass(frozen=True)
class ControlEvidence:
    """One check of the report: the controls and articles it evidences, whether it holds, and its evidence."""

    check: str
    iso: tuple[str, ...]
    pdpl: tuple[str, ...]
    ok: bool
    evidence: str


def evidenced_controls(report: ComplianceReport) -> tuple[ControlEvidence, ...]:
    """Every check of ``report`` mapped to the controls and articles it evidences."""
    outside = report.residency_violations
    at_rest = [h for h in report.hops if not h.at_rest.ok]
    in_transit = [h for h in report.hops if not h.in_transit.ok]
    refused = [w for w in report.waivers if w.status.startswith(("refused", "expired"))]
    hops = len(report.hops)

    def rows(failing: Sequence[Hop], what: str) -> str:
        names = ", ".join(h.ref for h in failing)
        return f"failing: {names}" if failing else f"all {hops} hop(s) {what} (section Hops)"

    return (
        ControlEvidence("data residency of every hop", ("A.5.34", "A.5.31"), ("Art. 22", "Art. 23"), not outside,
                        rows(outside, f"in {', '.join(report.allowed_regions)}")),
        ControlEvidence("encryption at rest as enforced", ("A.8.24",), ("Art. 20",), not at_rest,
                        rows(at_rest, "encrypted at rest")),
        ControlEvidence("encryption and authentication in transit as enforced", ("A.8.24", "A.8.20", "A.5.14", "A.8.5"),
                        ("Art. 20",), not in_transit, rows(in_transit, "protected in transit")),
        ControlEvidence("policies evaluated, no un-waived deny", ("A.5.36",), ("Art. 20",), not report.blocking,
                        f"{len(report.blocking)} blocking finding(s) (section Blocking findings)" if report.blocking
                        else f"{len(report.policies)} policies, no blocking finding"),
        ControlEvidence("waivers: signed by an approver, time-limited", ("A.5.36",), ("Art. 7",), not refused,
                        f"refused or expired: {', '.join(w.ref for w in refused)}" if refused
                        else f"{len(report.waivers)} waiver(s) in force (section Waivers)"),
        ControlEvidence("lineage and classification from source to endpoint", ("A.5.9", "A.5.12"), ("Art. 5", "Art. 7"),
                        True, f"{len(report.resources)} resource(s) traced (section Lineage)"),
    )  # fmt: skip
