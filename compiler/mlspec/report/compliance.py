"""The compliance report: where sensitive data goes in one environment, and under which controls.

Plain data, no formatting: for every resource that holds or derives from confidential or pii
data, its lineage through the resolved graph (source -> feature view -> feature service ->
training pipeline -> model -> deployment), the regions and encryption at each hop, the policies
that passed and failed on it, and the waivers in force. Views live in ``mlspec.report.views``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.diagnostics import Location
from mlspec.report.controls import ControlEvidence, evidenced_controls
from mlspec.resolve.enforcement import endpoint_enforcement
from mlspec.spec.datasource import DataSource
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment, EdgeDeploymentSpec, OnlineDeploymentSpec
from mlspec.spec.training import TrainingPipeline

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.policy.findings import Finding
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.spec.validate import ParsedSpec

SENSITIVE = ("confidential", "pii")  # the classifications the policy library protects (lib.sensitive)
STAGES = ("DataSource", "FeatureView", "FeatureService", "TrainingPipeline", "Model", "Deployment")
STAGE_NAMES = {
    "DataSource": "source",
    "FeatureView": "feature view",
    "FeatureService": "feature service",
    "TrainingPipeline": "training pipeline",
    "Model": "model",
    "Deployment": "deployment",
}


@dataclass(frozen=True, slots=True)
class Control:
    """One encryption control at a hop: what is in place, and whether it is enough."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Hop:
    """One place sensitive data is stored or processed: a resource, or the model a pipeline registers."""

    ref: str
    stage: str
    classification: str  # the most sensitive classification held or derived: pii or confidential
    regions: tuple[str, ...]  # every region the data of this hop lives in or comes from
    outside_residency: tuple[str, ...]  # of those, the regions not allowed by the environment
    at_rest: Control
    in_transit: Control
    file: str  # the spec file (project-relative) and line the hop is declared at
    line: int

    @property
    def in_residency(self) -> bool:
        """True when every region of the hop is allowed."""
        return not self.outside_residency

    @property
    def ok(self) -> bool:
        """In residency, and encrypted at rest and in transit as enforced."""
        return self.in_residency and self.at_rest.ok and self.in_transit.ok


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """A finding about one resource, reduced to what the report shows."""

    policy: str
    severity: str
    resource: str
    message: str
    waiver: str = ""


@dataclass(frozen=True, slots=True)
class ResourceCompliance:
    """One sensitive resource: its lineage and its policy results."""

    ref: str
    kind: str
    classification: str
    sources: tuple[str, ...]  # the confidential/pii DataSources it holds or derives from
    lineage: tuple[tuple[str, tuple[str, ...]], ...]  # (stage, hop refs) from sources to the resource
    passed: tuple[str, ...]
    failed: tuple[PolicyResult, ...]  # un-waived denies
    warned: tuple[PolicyResult, ...]
    waived: tuple[PolicyResult, ...]


@dataclass(frozen=True, slots=True)
class WaiverInForce:
    """A waiver that applies in the environment."""

    ref: str
    policy: str
    resources: tuple[str, ...]
    reason: str
    approved_by: str
    expires: str
    status: str  # active, expiring (within 30 days), expired or refused: ... (these waive nothing)
    waives: tuple[str, ...]  # "policy on resource" for each finding it waives here


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """The compliance of one environment's sensitive data."""

    project: str
    environment: str
    tier: str
    region: str
    jurisdiction: str
    allowed_regions: tuple[str, ...]
    kms_key: str | None
    tls: str
    as_of: str | None  # the date waivers were judged at, when one was given (no dates otherwise)
    policies: tuple[str, ...]  # every policy id evaluated
    hops: tuple[Hop, ...]
    resources: tuple[ResourceCompliance, ...]
    environment_findings: tuple[PolicyResult, ...]  # findings about the Environment itself
    blocking: tuple[PolicyResult, ...]  # every un-waived deny of the environment, sensitive or not
    waivers: tuple[WaiverInForce, ...]
    errors: tuple[str, ...] = ()  # validation or resolution errors: no report could be made
    controls: tuple[ControlEvidence, ...] = ()  # the ISO 27001 Annex A controls and PDPL articles each check evidences

    @property
    def residency_violations(self) -> tuple[Hop, ...]:
        """Hops with data outside the allowed regions."""
        return tuple(h for h in self.hops if not h.in_residency)

    @property
    def unprotected(self) -> tuple[Hop, ...]:
        """Hops not encrypted at rest or in transit as enforced (rendered policies, server settings, keys)."""
        return tuple(h for h in self.hops if not (h.at_rest.ok and h.in_transit.ok))

    @property
    def ok(self) -> bool:
        """No error, and every row holds: no hop outside the residency or unprotected, no un-waived deny."""
        return not self.errors and not self.residency_violations and not self.unprotected and not self.blocking


def build_compliance(
    project: Project, environment: str, *, today: dt.date | None = None, show_date: bool = False
) -> ComplianceReport:
    """Resolve and check ``environment`` and describe the compliance of its sensitive data.

    ``today`` judges waiver expiry (default: the current date); it appears in the report only
    with ``show_date``, so the same specs give the same bytes on any day.
    """
    from mlspec.report.policies import declared_policy_ids

    day = today or dt.date.today()
    with project.session(environment, today=day) as session:  # one validation, resolution and policy evaluation
        resolution = session.resolution
        graph = resolution.graph
        if graph is None or not resolution.ok:
            errors = tuple(
                f"{d.location}: {d.code}: {d.message}" for d in resolution.diagnostics if d.severity == "error"
            )
            return _empty(project.name, environment, errors)
        result = session.check()
    if not result.ok and any(d.severity == "error" for d in result.diagnostics):
        errors = tuple(f"{d.location}: {d.code}: {d.message}" for d in result.diagnostics if d.severity == "error")
        return _empty(project.name, environment, errors)
    findings = [f for f in result.findings if f.environment == environment]
    files = project.policy_set().files
    policies = tuple(sorted({*declared_policy_ids(files), *(f.policy for f in findings)}))
    env = graph.env.spec
    sensitive = _sensitive_sources(graph)
    derived = {ref: _sources_of(graph, ref, sensitive) for ref in graph.order}
    hops: list[Hop] = []
    resources: list[ResourceCompliance] = []
    for ref in graph.order:
        spec = graph.resources[ref]
        sources = derived[ref]
        if spec.kind not in STAGES or not sources:
            continue
        hops.extend(_hops(project.root, graph, spec, sources, sensitive))
        resources.append(_resource(graph, spec, sources=sources, derived=derived, policies=policies, findings=findings))
    report = ComplianceReport(
        project=project.name,
        environment=environment,
        tier=env.tier,
        region=env.region,
        jurisdiction=env.data_residency.jurisdiction,
        allowed_regions=tuple(env.data_residency.allowed_regions),
        kms_key=env.encryption.kms_key,
        tls=env.encryption.tls,
        as_of=day.isoformat() if show_date else None,
        policies=policies,
        hops=tuple(sorted(hops, key=lambda h: h.ok)),  # failing rows first (a stable sort keeps lineage order)
        resources=tuple(resources),
        environment_findings=tuple(_result(f) for f in findings if f.resource == graph.environment.ref),
        blocking=tuple(_result(f) for f in findings if f.blocking),
        waivers=_waivers(graph, findings, day),
    )
    return dataclasses.replace(report, controls=evidenced_controls(report))


def _empty(project: str, environment: str, errors: tuple[str, ...]) -> ComplianceReport:
    return ComplianceReport(project, environment, "", "", "", (), None, "", None, (), (), (), (), (), (), errors)


def _sensitive_sources(graph: ResolvedGraph) -> dict[str, ParsedSpec[DataSource]]:
    return {s.ref: s for s in graph.specs(DataSource) if s.model.spec.classification in SENSITIVE}


def _sources_of(graph: ResolvedGraph, ref: str, sensitive: dict[str, ParsedSpec[DataSource]]) -> tuple[str, ...]:
    return tuple(sorted(r for r in {ref, *graph.upstream(ref)} if r in sensitive))


def _classification(sources: tuple[str, ...], sensitive: dict[str, ParsedSpec[DataSource]]) -> str:
    found = {sensitive[s].model.spec.classification for s in sources}
    return "pii" if "pii" in found else "confidential"


def _where(root: Path, location: Location) -> tuple[str, int]:
    absolute = Path(location.file).resolve()
    file = absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else location.file
    return file, location.line


def _hops(
    root: Path,
    graph: ResolvedGraph,
    spec: ParsedSpec,
    sources: tuple[str, ...],
    sensitive: dict[str, ParsedSpec[DataSource]],
) -> list[Hop]:
    env = graph.env.spec
    allowed = env.data_residency.allowed_regions
    kms = env.encryption.kms_key
    env_tls = Control(env.encryption.tls == "required", f"environment tls: {env.encryption.tls}")
    env_key = Control(kms is not None, f"environment key {kms}" if kms else "no environment KMS key")
    file, line = _where(root.resolve(), spec.document.location)
    classification = _classification(sources, sensitive)
    if (data_source := spec.as_kind(DataSource)) is not None:
        source = data_source.model.spec
        enc = source.encryption
        at_rest = Control(
            bool(enc.at_rest and enc.kms_key),
            ("encrypted" if enc.at_rest else "not encrypted") + (f", key {enc.kms_key}" if enc.kms_key else ", no key"),
        )
        regions: tuple[str, ...] = (source.region,)
        return [
            Hop(spec.ref, "source", classification, regions, _outside(regions, allowed), at_rest, env_tls, file, line)
        ]
    regions = tuple(sorted({env.region, *(sensitive[s].model.spec.region for s in sources)}))
    outside = _outside(regions, allowed)
    stage = STAGE_NAMES[spec.kind]
    if spec.kind == "FeatureView":
        at_rest = Control(env_key.ok, f"offline/online stores: {env_key.detail}")
    elif spec.kind == "TrainingPipeline":
        at_rest = Control(env_key.ok, f"training data and runs: {env_key.detail}")
    else:
        at_rest = env_key
    in_transit = env_tls
    deployment = spec.as_kind(Deployment)
    serving = deployment.model.spec if deployment is not None else None
    if isinstance(serving, OnlineDeploymentSpec):
        # what is enforced, not what is declared: a TLS or auth setting nothing serves is a FAIL
        enforced, declared = endpoint_enforcement(graph, serving), serving.auth
        auth_detail = f"auth: {enforced.auth}" + (f" by {enforced.auth_by}" if enforced.auth_by else "")
        if declared.required and enforced.auth != declared.method:
            auth_detail += f" (declared {declared.method}, not enforced)"
        in_transit = Control(
            env_tls.ok and enforced.tls and (enforced.auth != "none" or not declared.required),
            f"{env_tls.detail}; {enforced.transport} ({serving.endpoint.visibility}); {auth_detail}",
        )
    elif serving is not None:  # batch and edge Deployments have no endpoint
        at_rest, in_transit = _offline_controls(serving, graph, env_key, env_tls)
    hops = [Hop(spec.ref, stage, classification, regions, outside, at_rest, in_transit, file, line)]
    if (pipeline := spec.as_kind(TrainingPipeline)) is not None:
        store = graph.env.spec.targets.registry.artifact_store
        where = f" in {store.uri} ({store.region or 'region undeclared'})" if store else ""
        detail = f"model artifacts{where}: {env_key.detail}"
        model_ref = f"Model/{pipeline.model.model_name}"
        hops.append(
            Hop(model_ref, "model", classification, regions, outside, Control(env_key.ok, detail), env_tls, file, line)
        )
    return hops


def _offline_controls(
    deployment: BatchDeploymentSpec | EdgeDeploymentSpec, graph: ResolvedGraph, env_key: Control, env_tls: Control
) -> tuple[Control, Control]:
    """At rest and in transit for what a batch Deployment writes (its predictions) and an edge Deployment ships (a
    package): what mlspec protects, and what it leaves to the sink's or the device's own controls."""
    if isinstance(deployment, BatchDeploymentSpec):
        sink = deployment.batch.sink
        if sink.table:
            return (
                Control(env_key.ok, f"model: {env_key.detail}; predictions in table {sink.table} (the warehouse's "
                        "encryption at rest)"),
                Control(env_tls.ok, f"{env_tls.detail}; sink connection {sink.connection} (a reference)"),
            )  # fmt: skip
        return (
            Control(False, f"model: {env_key.detail}; predictions: parquet under {sink.path}, not encrypted"),
            env_tls,
        )
    encryption = graph.env.spec.encryption
    signer = deployment.edge.signing_key or encryption.signing_key or "the environment's key"
    return (
        Control(False, f"edge package: the model in plaintext on devices, signed by {signer} (integrity, not secrecy)"),
        Control(True, "shipped as a signed package: every file's sha256 in an Ed25519-signed manifest"),
    )


def _outside(regions: tuple[str, ...], allowed: list[str]) -> tuple[str, ...]:
    return tuple(r for r in regions if r not in allowed)


def _resource(
    graph: ResolvedGraph,
    spec: ParsedSpec,
    *,
    sources: tuple[str, ...],
    derived: dict[str, tuple[str, ...]],
    policies: tuple[str, ...],
    findings: list[Finding],
) -> ResourceCompliance:
    chain = [r for r in sorted({spec.ref, *graph.upstream(spec.ref)}) if derived.get(r)]
    lineage: list[tuple[str, tuple[str, ...]]] = []
    for kind in STAGES:
        refs = [r for r in chain if graph.resources[r].kind == kind] if kind != "Model" else []
        if kind == "Model":
            refs = [
                f"Model/{pipeline.model.model_name}"
                for r in chain
                if (pipeline := graph.typed(TrainingPipeline, r)) is not None
            ]
        if refs:
            lineage.append((STAGE_NAMES[kind], tuple(refs)))
    mine = [f for f in findings if f.resource == spec.ref]
    failed = tuple(_result(f) for f in mine if f.blocking)
    warned = tuple(_result(f) for f in mine if f.severity == "warn" and f.status == "failed")
    waived = tuple(_result(f) for f in mine if f.status == "waived")
    not_passed = {f.policy for f in mine if f.status in {"failed", "waived"}}
    return ResourceCompliance(
        ref=spec.ref,
        kind=spec.kind,
        classification=_classification(sources, _sensitive_sources(graph)),
        sources=sources,
        lineage=tuple(lineage),
        passed=tuple(p for p in policies if p not in not_passed),
        failed=failed,
        warned=warned,
        waived=waived,
    )


def _result(finding: Finding) -> PolicyResult:
    return PolicyResult(finding.policy, finding.severity, finding.resource, finding.message, finding.waiver)


def _waivers(graph: ResolvedGraph, findings: list[Finding], today: dt.date) -> tuple[WaiverInForce, ...]:
    from mlspec.policy.waivers import EXPIRY_WARNING_DAYS, TOO_LONG, UNAPPROVED

    out: list[WaiverInForce] = []
    for waiver in sorted(graph.waivers, key=lambda w: w.ref):
        spec = waiver.model.spec
        days = (spec.expires - today).days
        refused = {f.policy for f in findings if f.resource == waiver.ref and f.policy in (TOO_LONG, UNAPPROVED)}
        status = (
            "expired" if days < 0
            else "refused: not signed by an approver" if UNAPPROVED in refused
            else "refused: longer than allowed" if TOO_LONG in refused
            else "expiring" if days <= EXPIRY_WARNING_DAYS else "active"
        )  # fmt: skip
        waives = tuple(sorted(f"{f.policy} on {f.resource}" for f in findings if f.waiver == waiver.ref))
        out.append(
            WaiverInForce(
                waiver.ref,
                spec.policy,
                tuple(spec.resources),
                spec.reason,
                spec.approved_by,
                spec.expires.isoformat(),
                status,
                waives,
            )
        )
    return tuple(out)
