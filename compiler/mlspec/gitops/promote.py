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
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from pathlib import Path
from typing import Any

import yaml

from mlspec.errors import MlspecError, UsageError
from mlspec.hashing import canonical
from mlspec.load.documents import RawDocument
from mlspec.plan.model import FieldChange
from mlspec.project import Project
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.overlay import PatchedDocument, merge_patch
from mlspec.spec.validate import ParsedSpec

PROMOTABLE: dict[str, tuple[str, ...]] = {
    "TrainingPipeline": (
        "features", "label", "entity_source", "model", "hyperparameters", "search", "evaluation", "register",
    ),
    "Deployment": ("model", "features", "rollout", "monitoring"),
    "FeatureView": ("entities", "features", "ttl"),
    "FeatureService": ("features",),
}  # fmt: skip
HEADER = "# promoted from {source} by mlspec promote"
_BLOCK_RE = re.compile(
    r"^(?P<indent>[ \t]*)# promoted from \S+ by mlspec promote[^\n]*\n"
    r"(?P=indent)- target: (?P<ref>\S+)[ \t]*\n"
    r"(?P=indent)  patch: [^\n]*\n",
    re.MULTILINE,
)
_PLAIN_RE = re.compile(r"^[A-Za-z_][-A-Za-z0-9_./]*$")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})


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
    from mlspec.apply.workflow import state_store

    store = state_store(project)
    try:
        resource = store.read(environment).resources.get(ref)
        audit = store.audit(environment)
    finally:
        store.close()
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


# ------------------------------------------------------------------------------------------- editing


def flow(value: Any) -> str:
    """``value`` as one line of YAML flow style that mlspec's loader reads back identically."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{flow(str(k))}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN_RE.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _child(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k, v
    return None


def _last_line(node: yaml.Node) -> int:
    """0-based index of the last line holding ``node``'s content."""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    mark = node.end_mark
    return int(mark.line if mark.column > 0 else mark.line - 1)


def edit_overrides(
    text: str, root: yaml.Node, blocks: dict[str, dict[str, Any]], replace: set[str], source: str
) -> str:
    """Append one override entry per ``blocks`` item; drop earlier promoted entries for the refs in ``replace``.

    Only lines are added and removed: every other line, comment and blank line stays as it was.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    joined = "".join(lines)
    removed: set[int] = set()
    for match in _BLOCK_RE.finditer(joined):
        if match.group("ref") in replace:
            first = joined.count("\n", 0, match.start())
            removed.update(range(first, first + 3))
    spec = _child(root, "spec")
    if spec is None or not isinstance(spec[1], yaml.MappingNode) or spec[1].flow_style:
        raise MlspecError("the environment's 'spec' must be a block mapping for promotion to edit it")
    spec_node = spec[1]
    overrides = _child(spec_node, "overrides")
    key_indent = spec_node.value[0][0].start_mark.column
    header_lines: list[str] = []
    drop_key: int | None = None
    if overrides is None:
        after = _last_line(spec_node)
        dash = " " * (key_indent + 2)
        header_lines = [" " * key_indent + "overrides:\n"]
    else:
        key_node, seq = overrides
        if not isinstance(seq, yaml.SequenceNode):
            raise MlspecError("the environment's 'overrides' must be a list")
        if seq.flow_style and seq.value:
            raise MlspecError(
                "the environment's 'overrides' is written in flow style ([...]); write it as a block list first",
                hint="one '- target: ...' entry per line, as in the reference environments",
            )
        if seq.flow_style:  # overrides: []
            drop_key = key_node.start_mark.line
            after = key_node.start_mark.line
            dash = " " * (key_node.start_mark.column + 2)
            header_lines = [" " * key_node.start_mark.column + "overrides:\n"]
        else:
            after = _last_line(seq)
            first = seq.value[0].start_mark
            dash = " " * lines[first.line].rfind("-", 0, first.column)
            remaining = sum(1 for item in seq.value if item.start_mark.line not in removed)
            if not remaining and not blocks:
                drop_key = key_node.start_mark.line
    new: list[str] = []
    if blocks:
        new.extend(header_lines)
        for ref, patch in blocks.items():
            new.append(f"{dash}{HEADER.format(source=source)}\n")
            new.append(f"{dash}- target: {ref}\n")
            new.append(f"{dash}  patch: {flow(patch)}\n")
    out: list[str] = []
    for index, line in enumerate(lines):
        if index not in removed and index != drop_key:
            out.append(line)
        if index == after:
            out.extend(new)
    return "".join(out)


# ------------------------------------------------------------------------------------------- git


def _git(root: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=120,
            env={**os.environ, **(env or {})}, input=stdin,
        )  # fmt: skip
    except FileNotFoundError:
        raise MlspecError("git is not installed; promotion proposes a git commit") from None
    except subprocess.CalledProcessError as exc:
        raise MlspecError(f"git {args[0]} failed: {exc.stderr.strip() or exc.stdout.strip()}") from None
    return done.stdout.strip()


@contextlib.contextmanager
def _snapshot(project: Project) -> Iterator[tuple[Project, Path]]:
    """The project as committed at HEAD, in a temporary folder, sharing the real project's state."""
    from mlspec.apply.workflow import project_at

    with project_at(project, "HEAD") as snapshot:
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
    base = _clean_commit(project)
    repo_root = Path(_git(project.root, "rev-parse", "--show-toplevel")).resolve()
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
        replaced_lines = _promoted_entries(text, set(wanted))
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
        (repo_root / relative).write_text(new_text, encoding="utf-8")
        _git(repo_root, "add", "--", relative)
        _git(repo_root, "commit", "-q", "-m", message, "--", relative)
        current = _git(repo_root, "rev-parse", "--abbrev-ref", "HEAD")
        commit = _git(repo_root, "rev-parse", "HEAD")
        return replace(result, commit=commit, branch=current, requires_approval=requires, on_new_branch=False)
    name = branch or f"promote/{source}-to-{target}-{base[:7]}"
    _git(repo_root, "check-ref-format", "--branch", name)
    exists = subprocess.run(
        ["git", "-C", str(repo_root), "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"],
        capture_output=True, check=False,
    )  # fmt: skip
    if exists.returncode == 0:
        raise UsageError(f"branch '{name}' already exists", hint="pass --branch NAME, or delete the old branch")
    commit = _commit_without_checkout(repo_root, relative, new_text, message)
    _git(repo_root, "branch", name, commit)
    return replace(result, commit=commit, branch=name, requires_approval=requires)


def _clean_commit(project: Project) -> str:
    """HEAD's commit; refuses a project outside git or with uncommitted changes (mlspec's own files aside)."""
    from mlspec.git.info import revision

    state = revision(project.root, (project.home / ".mlspec",))
    if state.commit == "unversioned":
        raise UsageError(f"{project.root} is not in a git repository with a commit; promotion proposes a commit")
    if state.dirty:
        raise UsageError(
            "the working tree has uncommitted changes; promotion commits exactly one change and never mixes in yours",
            hint="commit or stash your changes first (git stash), then promote again",
        )
    return state.commit


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


def _promoted_entries(text: str, refs: set[str]) -> set[int]:
    """0-based line numbers of the ``- target:`` lines of earlier promoted entries for ``refs``."""
    found = set()
    for match in _BLOCK_RE.finditer(text):
        if match.group("ref") in refs:
            found.add(text.count("\n", 0, match.start()) + 1)
    return found


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


def _commit_without_checkout(repo_root: Path, relative: str, text: str, message: str) -> str:
    """A commit on top of HEAD that changes one file, made with a private index: the working tree is untouched."""
    with tempfile.TemporaryDirectory(prefix="mlspec-promote-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo_root, "read-tree", "HEAD", env=env)
        blob = _git(repo_root, "hash-object", "-w", "--stdin", stdin=text)
        mode = _git(repo_root, "ls-tree", "HEAD", "--", relative).split(" ", 1)[0] or "100644"
        _git(repo_root, "update-index", "--cacheinfo", f"{mode},{blob},{relative}", env=env)
        tree = _git(repo_root, "write-tree", env=env)
        return _git(repo_root, "commit-tree", tree, "-p", "HEAD", "-F", "-", stdin=message)
