"""Plan: the diff between the desired state (resolved specs and their rendered artifacts) and applied state.

Diffs compare the resolved but unrendered spec, so a field change is shown as the
field a person edited. Each change is classified and says why. ``plan()`` only
reads state.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlspec.hashing import canonical, digest
from mlspec.plan.model import Action, Change, Classification, FieldChange, Plan
from mlspec.render.base import Artifact
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.base import StrictModel
from mlspec.spec.features import FeatureView
from mlspec.state.model import EnvironmentState

# Targets whose files aggregate the whole environment: they belong to the Environment, whatever their sources.
SHARED_TARGETS = frozenset({"manifest", "feast", "mlflow", "argocd"})
METADATA_FIELDS = ("metadata.description", "metadata.labels", "metadata.owner")
RETRAIN_FIELDS = ("spec.features", "spec.label", "spec.entity_source", "spec.model", "spec.hyperparameters",
                  "spec.search", "spec.evaluation")  # fmt: skip


@dataclass(frozen=True)
class Desired:
    """One resource as it should be: resolved spec, fingerprint, and the artifacts it owns."""

    ref: str
    fingerprint: str
    model: StrictModel  # the resolved model; ``spec`` is its JSON form, made only when a change needs it
    artifacts: dict[str, Artifact]

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The resolved spec as JSON data."""
        data: dict[str, Any] = self.model.model_dump(mode="json", by_alias=True)
        return data


def desired_state(graph: ResolvedGraph, artifacts: tuple[Artifact, ...]) -> dict[str, Desired]:
    """Every resource of the environment, the Environment itself included, with the artifacts each owns.

    An artifact made from one resource belongs to it; one made from several, or by a
    target that aggregates the environment (Feast repository, registry file, Argo CD,
    the manifest), belongs to the Environment.
    """
    env_ref = graph.environment.ref
    owners: dict[str, dict[str, Artifact]] = {ref: {} for ref in (*graph.order, env_ref)}
    for artifact in artifacts:
        resources = [s for s in artifact.sources if s in graph.resources]
        per_resource = artifact.target not in SHARED_TARGETS and len(resources) == 1
        owners[resources[0] if per_resource else env_ref][artifact.path] = artifact
    desired: dict[str, Desired] = {}
    for ref in graph.order:
        spec = graph.resources[ref]
        desired[ref] = Desired(ref, graph.fingerprint(ref), spec.model, owners[ref])
    desired[env_ref] = Desired(env_ref, graph.environment.digest, graph.environment.model, owners[env_ref])
    return desired


def desired_hash(desired: dict[str, Desired]) -> str:
    """One hash of everything desired: a saved plan applies only while this is unchanged.

    Fingerprints stand for the resolved specs (they change whenever a spec, its
    overrides or anything it depends on changes), so no spec is serialised here.
    """
    parts = [
        canonical([ref, d.fingerprint, sorted((p, a.sha256) for p, a in d.artifacts.items())])
        for ref, d in sorted(desired.items())
    ]
    return digest(*parts)


def diff_fields(before: Any, after: Any, path: str = "", *, brackets: bool = False) -> list[FieldChange]:
    """Field-level differences between two JSON values, with dotted paths.

    Lists of named items (features, variants) are matched by name (``features[txn_count].dtype``),
    lists of equal length item by item, other lists compared whole.
    """
    if isinstance(before, list) and isinstance(after, list):
        if _named(before) and _named(after):
            return diff_fields(
                {str(i["name"]): i for i in before}, {str(i["name"]): i for i in after}, path, brackets=True
            )
        if len(before) == len(after):
            return [
                c for i, (b, a) in enumerate(zip(before, after, strict=True)) for c in diff_fields(b, a, f"{path}[{i}]")
            ]
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[FieldChange] = []
        for key in sorted(set(before) | set(after)):
            sub = f"{path}[{key}]" if brackets else (f"{path}.{key}" if path else str(key))
            if key not in before:
                if after[key] is not None:  # a field that is new and unset (a new optional field) changes nothing
                    changes.append(FieldChange(sub, None, after[key]))
            elif key not in after:
                if before[key] is not None:
                    changes.append(FieldChange(sub, before[key], None))
            else:
                changes.extend(diff_fields(before[key], after[key], sub))
        return changes
    return [] if before == after else [FieldChange(path, before, after)]


def _named(items: list[Any]) -> bool:
    names = [i.get("name") for i in items if isinstance(i, dict)]
    return len(names) == len(items) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def classify(
    ref: str, action: str, fields: list[FieldChange], graph: ResolvedGraph, before: dict[str, Any] | None
) -> tuple[Classification, list[str]]:
    """Breaking, needs-retrain, safe or metadata, and why."""
    kind = ref.split("/", 1)[0]
    users = sorted(graph.dependents(ref)) if ref in graph.resources else []
    if action == "delete":
        if kind == "Deployment":
            return "breaking", [f"{ref} is removed: its endpoint stops serving traffic"]
        return "breaking", [f"{ref} is removed"]
    if action == "create":
        return "safe", [f"{ref} is new"]
    if not fields:
        return "safe", ["its rendered artifacts changed (a dependency or the environment changed)"]
    paths = [f.path for f in fields]
    if all(p.startswith(METADATA_FIELDS) for p in paths):
        return "metadata", [f"only {', '.join(paths)} changed"]
    reasons: list[str] = []
    breaking = False
    if kind == "FeatureView" and before is not None:
        old = {f["name"]: f["dtype"] for f in before["spec"]["features"]}
        new = {f.name: f.dtype for f in graph.require(FeatureView, ref.partition("/")[2]).model.spec.features}
        for name, dtype in old.items():
            if name not in new:
                reasons.append(f"feature '{name}' is removed")
                breaking = True
            elif new[name] != dtype:
                reasons.append(f"feature '{name}' changes type {dtype} -> {new[name]}")
                breaking = True
        if breaking and users:
            reasons.append(f"used by {', '.join(users)}")
    if kind == "Entity" and any(p.startswith("spec.join_keys") for p in paths):
        reasons.append("join keys change")
        breaking = True
    if kind == "Deployment":
        for f in fields:
            if f.path == "spec.model.name":
                reasons.append(f"serves another model ({f.before} -> {f.after}): the input schema may change")
                breaking = True
            if f.path == "spec.scaling.min_replicas" and f.after == 0:
                reasons.append("scales to zero replicas: traffic is dropped")
                breaking = True
    if breaking:
        return "breaking", reasons
    if kind == "TrainingPipeline" and any(p.startswith(RETRAIN_FIELDS) for p in paths):
        return "needs-retrain", [f"{', '.join(p for p in paths if p.startswith(RETRAIN_FIELDS))} changed"]
    if kind in ("DataSource", "FeatureView", "FeatureService") and any(
        u.startswith("TrainingPipeline/") for u in users
    ):
        pipelines = [u for u in users if u.startswith("TrainingPipeline/")]
        return "needs-retrain", [f"{', '.join(paths)} changed; retrain {', '.join(pipelines)}"]
    return "safe", [f"{', '.join(paths)} changed"]


def make_plan(
    graph: ResolvedGraph,
    desired: dict[str, Desired],
    state: EnvironmentState,
    *,
    project: str,
    revision: str,
    prune: bool = True,
    drifted: frozenset[str] = frozenset(),
    drift_reasons: Mapping[str, str] | None = None,
) -> Plan:
    """The plan that takes ``state`` to ``desired`` (see desired_state), in apply order; ``drifted`` resources
    are updated even when unchanged, saying why (``drift_reasons``, else a generic drift reason)."""
    changes: list[Change] = []
    order = [*graph.order, graph.environment.ref]
    for ref in order:
        want = desired[ref]
        have = state.resources.get(ref)
        wanted_hashes = {p: a.sha256 for p, a in want.artifacts.items()}
        action: Action
        if have is None:
            action = "create"
            fields: list[FieldChange] = []
        elif have.fingerprint == want.fingerprint and have.artifacts == wanted_hashes and ref not in drifted:
            changes.append(Change(ref, "noop", "safe", fingerprint=want.fingerprint, artifacts=wanted_hashes))
            continue  # equal fingerprints mean equal specs: no field diff needed
        else:
            fields = diff_fields(have.spec, want.spec)
            changed = fields or have.artifacts != wanted_hashes or ref in drifted
            action = "update" if changed else "noop"
        classification, reasons = classify(ref, action, fields, graph, have.spec if have else None)
        if action == "update" and ref in drifted:
            why = (drift_reasons or {}).get(ref, "the target no longer matches what was applied")
            reasons = [*reasons, f"drift: {why}"]
        if action == "update" and have is not None and have.artifacts != wanted_hashes:
            touched = sorted(
                p for p in set(have.artifacts) | set(wanted_hashes) if have.artifacts.get(p) != wanted_hashes.get(p)
            )
            reasons = [*reasons, f"artifacts change: {', '.join(touched[:5])}" + (" ..." if len(touched) > 5 else "")]
        if action == "noop":
            classification, reasons = "safe", []
        changes.append(
            Change(
                ref, action, classification, tuple(fields), tuple(reasons), want.fingerprint, want.spec, wanted_hashes
            )
        )
    if prune:
        changes.extend(_deletes(graph, state, [ref for ref in state.resources if ref not in desired]))
    return Plan(graph.name, project, revision, state.serial, desired_hash(desired), tuple(changes))


def destroy_plan(graph: ResolvedGraph, state: EnvironmentState, *, project: str, revision: str) -> Plan:
    """The plan that deletes everything applied in the environment (``mlspec destroy``)."""
    return Plan(
        graph.name,
        project,
        revision,
        state.serial,
        desired_hash({}),
        tuple(_deletes(graph, state, list(state.resources))),
    )


def _deletes(graph: ResolvedGraph, state: EnvironmentState, gone: list[str]) -> list[Change]:
    changes = []
    for ref in sorted(gone, key=_kind_rank, reverse=True):  # dependants first
        have = state.resources[ref]
        classification, reasons = classify(ref, "delete", [], graph, have.spec)
        changes.append(Change(ref, "delete", classification, (), tuple(reasons), have.fingerprint, have.spec, {}))
    return changes


_RANK = {"DataSource": 0, "Entity": 1, "FeatureView": 2, "FeatureService": 3, "TrainingPipeline": 4, "Deployment": 5}


def _kind_rank(ref: str) -> tuple[int, str]:
    return (_RANK.get(ref.split("/", 1)[0], 6), ref)
