"""JUnit XML: one test suite per environment, one test case per (policy, resource) that was judged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from xml.etree import ElementTree as ET

from mlspec.diagnostics import Diagnostic
from mlspec.policy.findings import Finding


def render_junit(diagnostics: Iterable[Diagnostic], findings: Sequence[Finding], environments: Sequence[str]) -> str:
    """A <testsuites> document; denies are failures, waived findings are skipped, warnings pass with output."""
    root = ET.Element("testsuites", name="mlspec check")
    problems = list(diagnostics)
    if problems:
        suite = ET.SubElement(root, "testsuite", name="validation", tests=str(len(problems)))
        suite.set("failures", str(sum(1 for d in problems if d.severity == "error")))
        for d in problems:
            case = ET.SubElement(suite, "testcase", classname=f"validation.{d.code}", name=str(d.location))
            if d.severity == "error":
                ET.SubElement(case, "failure", type=d.code, message=d.message).text = f"{d.location}: {d.message}"
    for env in environments:
        own = [f for f in findings if f.environment == env]
        suite = ET.SubElement(root, "testsuite", name=f"policies.{env}", tests=str(max(len(own), 1)))
        suite.set("failures", str(sum(1 for f in own if f.blocking)))
        suite.set("skipped", str(sum(1 for f in own if f.status == "waived")))
        if not own:
            ET.SubElement(suite, "testcase", classname=f"policies.{env}", name="all policies pass")
        for f in own:
            case = ET.SubElement(suite, "testcase", classname=f.policy, name=f"{f.resource} ({env})")
            if f.status == "waived":
                ET.SubElement(case, "skipped", message=f"waived by {f.waiver}")
            elif f.severity == "deny":
                ET.SubElement(case, "failure", type=f.policy, message=f.message).text = f"{f.location}: {f.message}"
            else:
                ET.SubElement(case, "system-out").text = f"warning: {f.location}: {f.message}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
