"""Promotion: make one environment run what another runs, proposed as one git commit.

What "what the source runs" means, precisely:

* For each resource (the named ones, or every one that differs), the **resolved**
  spec (base spec plus the environment's overrides) in the source environment is
  compared with the resolved spec in the target environment, field by field, on the
  *promotable* fields only (``PROMOTABLE``): what the model is and how it is made
  and released (TrainingPipeline model, features, label, hyperparameters, search,
  evaluation, registration; Deployment model reference, features, rollout and
  monitoring; FeatureView features, entities and TTL; FeatureService features).
* Everything else is environment-bound and never copied: resources, GPUs and
  spot, schedules and retrain triggers, scaling, runtime devices, auth, endpoints,
  DataSources, Entities, the Environment itself.
* A Deployment's model version: when the source environment's state records which
  registered version it serves (the ``stable`` version of the server's
  ``versions``, or a ``name/N`` entry of the last apply's ``serving`` map), that
  version is pinned in the target (``model: {version: N}``), so the target serves
  exactly the version that was tested. A/B Deployments serve by alias and are not
  pinned. ``pin=False`` turns pinning off.
* Each difference becomes one entry appended to the target environment's
  ``overrides`` (an RFC 7386 merge patch on top of the target's own overrides),
  headed by a ``# promoted from <env> by mlspec promote`` comment. Promoting the
  same resource again replaces the earlier promoted entry instead of stacking a
  new one. The file is edited as text: its comments and layout survive.

The result is validated (the whole project, and the target environment resolved
with the new file must carry exactly the source's promotable values) before
anything is committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path
from typing import Any

from mlspec.app.project import Project
from mlspec.errors import MlspecError, UsageError
from mlspec.gitops import usecases
from mlspec.gitops.overrides_text import edit_overrides, flow, promoted_entries
from mlspec.gitops.proposal import clean_commit, commit_on_current, commit_on_new_branch, repository_root
from mlspec.hashing import canonical
from mlspec.load.documents import RawDocument
from mlspec.plan.model import FieldChange
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.overlay import PatchedDocument, merge_patch
from mlspec.spec.validate import ParsedSpec

__all__ = [
    "PROMOTABLE", "PromotedResource", "Promotion", "field_changes", "flow", "merge_diff", "promote", "served_version",
]  # fmt: skip

PROMOTABLE: dict[str, tuple[str, ...]] = {
    "TrainingPipeline": (
        "features", "label", "entity_source", "model", "hyperparameters", "search", "evaluation", "register",
    ),
    "Deployment": ("model", "features", "rollout", "monitoring"),
    "FeatureView": ("entities", "features", "ttl"),
    "FeatureService": ("features",),
}  # fmt: skip


@dataclass(frozen=True)
class PromotedResource:
    """What promotion changes for one resource in the target environment."""

    ref: str
    patch: dict[str, Any]
    changes: tuple[FieldChange, ...]
    pinned_version: int | None = None


@dataclass(frozen=True)
class Promotion:
    """The outcome: promoted resources, fields left alone, and the commit that carries the change."""

    source: str
    target: str
    base_commit: str
    resources: tuple[PromotedResource, ...]
    kept: tuple[tuple[str, str], ...]  # (ref, field): environment-bound differences that were not copied
    notes: tuple[str, ...] = ()
    file: str = ""
    commit: str = ""
    branch: str = ""
    requires_approval: bool = True
    on_new_branch: bool = True

    @property
    def nothing(self) -> bool:
        """True when the target already runs what the source runs."""
        return not self.resources


# ------------------------------------------------------------------------------------------- computing


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The smallest RFC 7386 merge patch that turns ``old`` into ``new`` (lists are replaced whole)."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_diff(old[key], value)
            if sub:
                patch[key] = sub
        elif canonical(value) != canonical(old[key]):
            patch[key] = value
    return patch


def field_changes(old: Any, new: Any, prefix: str = "") -> list[FieldChange]:
    """Leaf-level differences between two values, as dotted paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[FieldChange] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            changes.extend(field_changes(old.get(key), new.get(key), path))
        return changes
    return [] if canonical(old) == canonical(new) else [FieldChange(prefix, old, new)]


def _promotable(data: dict[str, Any], kind: str) -> dict[str, Any]:
    return {key: data[key] for key in PROMOTABLE.get(kind, ()) if key in data}


def _dump(spec: ParsedSpec) -> dict[str, Any]:
    inner = getattr(spec.model, "spec", None)
    dumped: dict[str, Any] = inner.model_dump(mode="json", by_alias=True) if inner is not None else {}
    return _promotable(dumped, spec.kind)


def _raw_spec(spec: ParsedSpec) -> dict[str, Any]:
    data = spec.document.data
    return dict(data.get("spec") or {}) if isinstance(data, dict) else {}


def served_version(project: Project, environment: str, ref: str, model_name: str) -> int | None:
    """The registered version a Deployment serves in ``environment``, as its state records it (None: unknown)."""
    path = project.home / project.settings.state.path
    if project.settings.state.backend == "sqlite" and not path.is_file():
        return None
    with project.state_store() as store:
        resource = store.read(environment).resources.get(ref)
        audit = store.audit(environment)
    # The newest record that says what served wins: settled rollouts and retrains change it after an apply.
    for record in reversed(audit):
        served = record.record.get("serving", {}).get(ref)
        if served is not None:
            return _stable_version(str(served), model_name)
    if resource is not None:
        return _stable_version(f"({resource.target_ids.get('versions', '')})", model_name)
    return None


def _stable_version(served: str, model_name: str) -> int | None:
    """The version from ``name/7``, or the stable variant's from ``name@champion (stable=7,canary=8)``."""
    variants = dict(item.split("=", 1) for item in served.partition("(")[2].rstrip(")").split(",") if "=" in item)
    if variants.get("stable", "").isdigit():
        return int(variants["stable"])
    name, _, version = served.split(" ", 1)[0].partition("/")
    return int(version) if name == model_name and version.isdigit() else None


def _select(graph: ResolvedGraph, names: Sequence[str]) -> list[str]:
    promotable = sorted(ref for ref in graph.resources if ref.split("/", 1)[0] in PROMOTABLE)
    if not names:
        return promotable
    chosen: list[str] = []
    for name in names:
        found = [ref for ref in graph.resources if ref == name or ref.split("/", 1)[1] == name]
        if not found:
            raise UsageError(
                f"no resource named '{name}' in environment '{graph.name}'",
                hint="name a resource as NAME or Kind/NAME, e.g. Deployment/fraud-api",
            )
        for ref in found:
            if ref.split("/", 1)[0] not in PROMOTABLE:
                raise UsageError(
                    f"{ref} is environment-bound and is never promoted",
                    hint="promotable kinds: " + ", ".join(PROMOTABLE),
                )
            if ref not in chosen:
                chosen.append(ref)
    return chosen


@contextlib.contextmanager
def _snapshot(project: Project) -> Iterator[tuple[Project, Path]]:
    """The project as committed at HEAD, in a temporary folder, sharing the real project's state."""
    with usecases.project_at(project, "HEAD") as snapshot:
        yield snapshot, snapshot.root


def _reopen(snapshot: Project) -> Project:
    import dataclasses

    return dataclasses.replace(Project.open(snapshot.root), state_root=snapshot.state_root)


# ------------------------------------------------------------------------------------------- the command


Wanted = dict[str, tuple[dict[str, Any], dict[str, Any], int | None]]  # ref -> (raw values, dumped values, pin)


def promote(
    project: Project,
    target: str,
    *,
    source: str | None = None,
    names: Sequence[str] = (),
    branch: str | None = None,
    on_current: bool = False,
    pin: bool = True,
) -> Promotion:
    """Propose ``target`` running what ``source`` runs: one commit, on a new branch or (``on_current``) on HEAD."""
    if branch is not None and on_current:
        raise UsageError("--branch and --commit exclude each other", hint="pick one")
    base = clean_commit(project)
    repo_root = repository_root(project)
    with _snapshot(project) as (snapshot, folder):
        source, requires, from_graph, to_graph = _endpoints(snapshot, target, source)
        wanted, kept, notes = _compare(snapshot, source, from_graph, to_graph, _select(to_graph, names), pin=pin)
        if not wanted:
            return Promotion(source, target, base, (), tuple(kept), tuple(notes))
        env_doc = to_graph.environment.document
        if not isinstance(env_doc, RawDocument):
            raise MlspecError(f"internal: environment '{target}' has no YAML source to edit")
        env_file = Path(env_doc.file).resolve()
        text = env_file.read_text(encoding="utf-8")
        replaced_lines = promoted_entries(text, set(wanted))
        blocks: dict[str, dict[str, Any]] = {}
        promoted: list[PromotedResource] = []
        for ref, (raw, _dumped, pinned) in wanted.items():
            dst = to_graph.resources[ref]
            patch = merge_diff(_promotable(_without(dst, replaced_lines), dst.kind), raw)
            changes = tuple(field_changes(_promotable(_raw_spec(dst), dst.kind), raw))
            if patch:
                blocks[ref] = {"spec": patch}
            promoted.append(PromotedResource(ref, {"spec": patch} if patch else {}, changes, pinned))
        new_text = edit_overrides(text, env_doc.node, blocks, set(wanted), source)
        env_file.write_text(new_text, encoding="utf-8")
        _verify(_reopen(snapshot), target, wanted, env_file)
        relative = (project.root.relative_to(repo_root) / env_file.relative_to(folder.resolve())).as_posix()
    message = (
        f"promote {source} to {target}: {', '.join(p.ref for p in promoted)}\n\n"
        + "\n".join(
            f"{p.ref}: " + ", ".join(f"{c.path} {flow(c.before)} -> {flow(c.after)}" for c in p.changes)
            for p in promoted
        )
        + f"\n\nProposed by `mlspec promote --from {source} --to {target}` at {base[:12]}.\n"
    )
    result = Promotion(source, target, base, tuple(promoted), tuple(kept), tuple(notes), relative)
    if on_current:
        commit, current = commit_on_current(repo_root, relative, new_text, message)
        return replace(result, commit=commit, branch=current, requires_approval=requires, on_new_branch=False)
    name = branch or f"promote/{source}-to-{target}-{base[:7]}"
    commit = commit_on_new_branch(repo_root, name, relative, new_text, message)
    return replace(result, commit=commit, branch=name, requires_approval=requires)


def _endpoints(snapshot: Project, target: str, source: str | None) -> tuple[str, bool, ResolvedGraph, ResolvedGraph]:
    """The source (default: the target's promotion.from), whether approval is required, and both graphs."""
    validation = snapshot.validate()
    environments = snapshot.environments(validation)
    graphs: dict[str, ResolvedGraph] = {}

    def resolved(name: str) -> ResolvedGraph:
        if name not in environments:
            raise UsageError(f"no environment '{name}'", hint="environments: " + ", ".join(environments))
        resolution = snapshot.resolve(name, validation)
        if resolution.graph is None or not resolution.ok:
            raise MlspecError(f"environment '{name}' does not resolve; run 'mlspec check --env {name}'")
        return resolution.graph

    graphs[target] = resolved(target)
    declared = graphs[target].env.spec.promotion
    if source is None:
        if declared is None:
            raise UsageError(f"'{target}' declares no promotion source", hint="pass --from ENV")
        source = declared.from_
    if declared is not None and declared.from_ != source:
        raise UsageError(
            f"'{target}' is promoted from '{declared.from_}' (spec.promotion.from), not from '{source}'",
            hint=f"promote {source} -> {declared.from_} first, or change {target}'s promotion.from",
        )
    if source == target:
        raise UsageError("--from and --to name the same environment")
    requires = declared.requires_approval if declared is not None else True
    return source, requires, resolved(source), graphs[target]


def _compare(
    snapshot: Project, source: str, from_graph: ResolvedGraph, to_graph: ResolvedGraph, refs: list[str], *, pin: bool
) -> tuple[Wanted, list[tuple[str, str]], list[str]]:
    """What differs on promotable fields (with pins), which environment-bound fields differ, and notes."""
    wanted: Wanted = {}
    kept: list[tuple[str, str]] = []
    notes: list[str] = []
    for ref in refs:
        src, dst = from_graph.resources.get(ref), to_graph.resources.get(ref)
        if src is None or dst is None:
            notes.append(f"{ref} exists in only one of the environments: not promoted")
            continue
        raw, dump = _promotable(_raw_spec(src), src.kind), _dump(src)
        pinned = _pin(snapshot, source, src) if pin else None
        if pinned is not None:
            raw = {**raw, "model": {**raw.get("model", {}), "version": pinned}}
            dump = {**dump, "model": {**dump.get("model", {}), "version": pinned}}
        all_src, all_dst = _raw_spec(src), _raw_spec(dst)
        kept.extend(
            (ref, key)
            for key in sorted(set(all_src) | set(all_dst))
            if key not in PROMOTABLE[src.kind] and canonical(all_src.get(key)) != canonical(all_dst.get(key))
        )
        if canonical(dump) != canonical(_dump(dst)):
            wanted[ref] = (raw, dump, pinned)
    return wanted, kept, notes


def _pin(project: Project, source: str, spec: ParsedSpec) -> int | None:
    if spec.kind != "Deployment":
        return None
    model = getattr(getattr(spec.model, "spec", None), "model", None)
    rollout = getattr(getattr(spec.model, "spec", None), "rollout", None)
    if model is None or model.version is not None or getattr(rollout, "strategy", "") == "ab":
        return None
    return served_version(project, source, spec.ref, model.name)


def _without(spec: ParsedSpec, entry_lines: set[int]) -> dict[str, Any]:
    """The resolved spec data without the overrides whose entries start on ``entry_lines``."""
    document = spec.document
    if not isinstance(document, PatchedDocument):
        return _raw_spec(spec)
    kept = []
    for patch in document.patches:
        entry = patch.path[:-1]  # ("spec", "overrides", i)
        line = patch.document.locate(entry).line - 1
        if line not in entry_lines:
            kept.append(patch.data)
    data = reduce(merge_patch, kept, document.base.data)
    return dict(data.get("spec") or {}) if isinstance(data, dict) else {}


def _verify(project: Project, target: str, wanted: Wanted, file: Path) -> None:
    """The edited file validates and the target now resolves to exactly the source's promotable values."""
    from mlspec.views.diagnostics_text import render_compact

    validation = project.validate()
    resolution = project.resolve(target, validation)
    if resolution.graph is None or not resolution.ok:
        raise MlspecError(
            f"the promoted {file.name} does not validate (nothing was committed):\n"
            + render_compact(resolution.diagnostics)
        )
    for ref, (_raw, dump, _pin_value) in wanted.items():
        if canonical(_dump(resolution.graph.resources[ref])) != canonical(dump):
            raise MlspecError(f"internal: promoting {ref} did not reproduce the source's values (nothing committed)")
