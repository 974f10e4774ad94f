"""Plan as frozen data: what applying would change, in order, why, and how risky. Views render it."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from mlspec.hashing import canonical, digest
from mlspec.policy.findings import Finding

# 2: the plan records the policy findings it was made with ("findings"); version 1 files still read.
PLAN_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
Action = Literal["create", "update", "delete", "noop"]
Classification = Literal["breaking", "needs-retrain", "safe", "metadata"]
SYMBOLS = {"create": "+", "update": "~", "delete": "-", "noop": " "}


@dataclass(frozen=True)
class FieldChange:
    """One changed value inside a resource's resolved spec."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One resource's planned action, field changes, artifacts and classification, with the reasons."""

    ref: str
    action: Action
    classification: Classification
    fields: tuple[FieldChange, ...] = ()
    reasons: tuple[str, ...] = ()
    fingerprint: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # path -> sha256 the resource owns when applied

    @property
    def kind(self) -> str:
        """The resource's kind."""
        return self.ref.split("/", 1)[0]


@dataclass(frozen=True)
class Plan:
    """Changes for one environment, in apply order (deletes last, dependants before dependencies)."""

    environment: str
    project: str
    revision: str
    state_serial: int
    desired_hash: str
    changes: tuple[Change, ...]
    schema_version: int = PLAN_SCHEMA_VERSION
    # the policy findings the plan was made with; not part of plan_hash (the changes are what apply checks)
    findings: tuple[Finding, ...] = ()

    @property
    def blocking(self) -> tuple[Finding, ...]:
        """The findings that make apply refuse this plan (failed denies, expired waivers included)."""
        return tuple(f for f in self.findings if f.blocking)

    @property
    def pending(self) -> tuple[Change, ...]:
        """Changes that do something."""
        return tuple(c for c in self.changes if c.action != "noop")

    @property
    def empty(self) -> bool:
        """True when applying would change nothing."""
        return not self.pending

    def counts(self) -> dict[str, int]:
        """How many of each action."""
        out = {"create": 0, "update": 0, "delete": 0, "noop": 0}
        for change in self.changes:
            out[change.action] += 1
        return out

    def summary(self) -> str:
        """``Plan: 2 to add, 1 to change, 0 to destroy``."""
        c = self.counts()
        return f"Plan: {c['create']} to add, {c['update']} to change, {c['delete']} to destroy"

    def _body(self) -> dict[str, Any]:
        # built by hand: dataclasses.asdict deep-copies every spec, which made large plans quadratic
        return {
            "schema_version": self.schema_version,
            "environment": self.environment,
            "project": self.project,
            "revision": self.revision,
            "state_serial": self.state_serial,
            "desired_hash": self.desired_hash,
            "changes": [
                {
                    "ref": c.ref,
                    "action": c.action,
                    "classification": c.classification,
                    "fields": [{"path": f.path, "before": f.before, "after": f.after} for f in c.fields],
                    "reasons": list(c.reasons),
                    "fingerprint": c.fingerprint,
                    "spec": c.spec,
                    "artifacts": c.artifacts,
                }
                for c in self.changes
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form (schema_version 2: with the policy findings)."""
        data = self._body()
        if self.schema_version >= 2:
            data["findings"] = [f.to_dict() for f in self.findings]
        data["plan_hash"] = self.plan_hash
        data["summary"] = self.counts()
        return data

    @functools.cached_property
    def plan_hash(self) -> str:
        """A hash of everything the plan would do: what `apply plan.json` checks it is applying."""
        return digest(canonical(self._body()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Read a saved plan; refuses other schema versions and edited files."""
        if not isinstance(data, dict):
            raise ValueError("not a plan document (a JSON object)")
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(
                f"plan schema_version {version!r} is not one this mlspec reads "
                f"({', '.join(map(str, READABLE_SCHEMA_VERSIONS))}); make the plan again with this version"
            )
        changes = tuple(
            Change(
                ref=c["ref"],
                action=c["action"],
                classification=c["classification"],
                fields=tuple(FieldChange(**f) for f in c["fields"]),
                reasons=tuple(c["reasons"]),
                fingerprint=c["fingerprint"],
                spec=c["spec"],
                artifacts=c["artifacts"],
            )
            for c in data["changes"]
        )
        findings = tuple(Finding.from_dict(f) for f in data.get("findings", []))
        plan = cls(
            data["environment"], data["project"], data["revision"], data["state_serial"], data["desired_hash"], changes,
            schema_version=version, findings=findings,
        )  # fmt: skip
        if data.get("plan_hash") != plan.plan_hash:
            raise ValueError("the plan file was edited after it was made (its hash is missing or does not match)")
        return plan
