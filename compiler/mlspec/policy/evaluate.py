"""Evaluate the policy library over one environment's resolved graph; fail closed on every error.

Each resource (and the Environment itself) is evaluated once against every
package under ``data.mlspec.policies``; the whole graph is ``data.mlspec.graph``
so a policy can follow a Deployment to its model's training data. Evaluation runs
in a child process with a time limit: a policy that errors, runs too long, or an
engine that crashes produces a deny finding, never a silent pass.

With a ``ResultCache``, the embedded engine's raw results are kept per subject, keyed
by every input its rules read (``mlspec.policy.reuse``): an unchanged environment is
not evaluated again, and after an edit only the subjects that can see the edited
spec are. Locations are mapped from the live specs every time, and errors are never kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import multiprocessing
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlspec.diagnostics import Location
from mlspec.load.discovery import display_path
from mlspec.policy.engine import OpaServerEngine, PolicyEngine, PolicyEngineError, RegorusEngine
from mlspec.policy.findings import Finding
from mlspec.policy.reuse import GraphFacts, document_digest, policies_scoped, subject_keys, visible_refs
from mlspec.policy.waivers import apply_waivers
from mlspec.resolve.enforcement import endpoint_enforcement
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec
from mlspec.spec.validate import ParsedSpec

LIBRARY = Path(__file__).parent / "library"
ROOT_QUERY = "data.mlspec.policies"
_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_REGO_LOCATION = re.compile(r"-->\s*(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+)")
CACHE_NAMESPACE = "policy-subjects/1"
Raw = list[tuple[str, str, Any]]  # (subject ref, "deny" | "warn", the policy's output object)
Outcome = tuple[Raw, list[Finding]]  # raw results, or the deny findings that say why evaluation failed
PARALLEL_FROM = 400  # subjects to evaluate from which they are split over the cores, one child each
# id(spec.model) -> (a weak reference to the model, ref, its document, the document's digest); an entry
# leaves when its model is collected, so a long-running process keeps only the specs still in use
_DOCUMENT_MEMO: dict[int, tuple[weakref.ref[Any], str, dict[str, Any], str]] = {}


class ResultCache(Protocol):
    """Where raw policy results are kept by input (``mlspec.render.cache.RenderCache`` is one)."""

    def lookup(self, namespace: str, inputs: Any) -> bytes | None:
        """Kept bytes for ``inputs``, if any."""

    def store(self, namespace: str, inputs: Any, content: bytes) -> None:
        """Keep ``content`` for ``inputs``."""


@dataclass(frozen=True)
class PolicySet:
    """The Rego files to evaluate: the built-in library plus the project's own (tests excluded)."""

    files: tuple[Path, ...]

    @classmethod
    def for_project(cls, policy_dir: Path | None) -> PolicySet:
        """The library and, when it exists, every ``*.rego`` under the project's policy folder."""
        return cls(tuple(f for f in policy_files(policy_dir) if not f.name.endswith("_test.rego")))


def policy_files(policy_dir: Path | None) -> list[Path]:
    """The library's Rego files and, when the folder exists, the project's; tests included."""
    files = sorted(LIBRARY.glob("*.rego"))
    if policy_dir is not None and policy_dir.is_dir():
        files += sorted(policy_dir.rglob("*.rego"))
    return files


def resource_document(spec: ParsedSpec) -> dict[str, Any]:
    """A resource as policies see it: its spec as plain JSON data plus ``ref`` and ``name``."""
    data: dict[str, Any] = spec.model.model_dump(mode="json", by_alias=True)
    data["ref"] = spec.ref
    data["name"] = spec.name
    return data


def _document_and_digest(spec: ParsedSpec) -> tuple[dict[str, Any], str]:
    """``resource_document(spec)`` and its digest, made once per spec object (environments share specs)."""
    key = id(spec.model)
    found = _DOCUMENT_MEMO.get(key)
    if found is None or found[0]() is not spec.model or found[1] != spec.ref:
        document = resource_document(spec)

        def forget(reference: weakref.ref[Any]) -> None:
            if _DOCUMENT_MEMO.get(key, (None,))[0] is reference:
                del _DOCUMENT_MEMO[key]

        found = (weakref.ref(spec.model, forget), spec.ref, document, document_digest(document))
        _DOCUMENT_MEMO[key] = found
    return found[2], found[3]


def graph_document(graph: ResolvedGraph) -> dict[str, Any]:
    """``data.mlspec.graph``: every resource and its dependencies."""
    return {
        "resources": {ref: _document_and_digest(graph.resources[ref])[0] for ref in graph.order},
        "dependencies": {ref: list(graph.dependencies[ref]) for ref in graph.order},
    }


def check_graph(
    graph: ResolvedGraph,
    project: str,
    policies: PolicySet,
    *,
    today: dt.date | None = None,
    timeout: float = 60.0,
    engine_factory: Callable[[], PolicyEngine] = RegorusEngine,
    cache: ResultCache | None = None,
    approvals: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every finding for one environment, waivers applied (``approvals``: waiver ref -> the approver whose
    signature it verifiably carries), in a stable order."""
    documents = _documents(graph, project)
    texts = _policy_texts(policies) if cache is not None and engine_factory is RegorusEngine else None
    if cache is not None and texts is not None:
        raw, errors = _evaluate_reusing(graph, documents, policies, texts, cache=cache, timeout=timeout)
    else:
        raw, errors = _isolated(lambda: _evaluate(graph, documents, policies, engine_factory), timeout, graph)
    subjects = {spec.ref: spec for spec in (graph.environment, *graph.resources.values())}
    found = errors or [_finding(item, severity, subjects[ref], graph) for ref, severity, item in raw]
    findings = apply_waivers(found, graph.waivers, graph.env, today or dt.date.today(), approvals)
    return sorted(findings, key=Finding.sort_key)


def _documents(graph: ResolvedGraph, project: str) -> dict[str, Any]:
    """What the policies see: ``data.mlspec.graph``, the environment, the project, the subjects in order.

    ``digests`` holds each subject's document digest, in the same order.
    """
    made = [_document_and_digest(spec) for spec in (graph.environment, *(graph.resources[ref] for ref in graph.order))]
    # how each online endpoint is really protected here (access.auth_required judges this, not the declaration)
    endpoints = {
        spec.name: endpoint_enforcement(graph, spec.model.spec).as_input()
        for spec in graph.specs(Deployment)
        if isinstance(spec.model.spec, OnlineDeploymentSpec)
    }
    environment = {"name": graph.name, "spec": made[0][0]["spec"], "endpoints": endpoints}
    resources = {ref: document for ref, (document, _) in zip(graph.order, made[1:], strict=True)}
    return {
        "graph": {"resources": resources, "dependencies": {ref: list(graph.dependencies[ref]) for ref in graph.order}},
        "environment": environment,
        "project": {"name": project},
        "subjects": [document for document, _ in made],
        "digests": [digest for _, digest in made],
    }


def _policy_texts(policies: PolicySet) -> list[tuple[Path, str]] | None:
    """Every policy file with its text; None when one cannot be read (evaluation reports it)."""
    try:
        return [(path, path.read_text(encoding="utf-8")) for path in policies.files]
    except (OSError, UnicodeDecodeError):
        return None


def _evaluate_reusing(
    graph: ResolvedGraph,
    documents: dict[str, Any],
    policies: PolicySet,
    texts: list[tuple[Path, str]],
    *,
    cache: ResultCache,
    timeout: float,
) -> tuple[Raw, list[Finding]]:
    """The raw results, taking each subject's from the cache when its key (``mlspec.policy.reuse``) is kept there.

    Only the subjects without kept results are evaluated, against the part of the graph
    their rules can read (all of it when the policies are not scoped); the environment's
    record is then rewritten with the current subjects' results.
    """
    facts = GraphFacts(
        dict(zip(graph.order, documents["digests"][1:], strict=True)), documents["graph"]["dependencies"]
    )
    context = {
        "policies": [(display_path(path), text) for path, text in texts],
        "environment": documents["environment"],
        "project": documents["project"],
    }
    subjects: list[dict[str, Any]] = documents["subjects"]
    scoped = policies_scoped(texts)
    keys = subject_keys(list(zip(subjects, documents["digests"], strict=True)), facts, context, scoped=scoped)
    record_key = {"project": documents["project"], "environment": graph.name}
    kept = _read_record(cache.lookup(CACHE_NAMESPACE, record_key))
    missing = {subject["ref"] for subject, key in zip(subjects, keys, strict=True) if key not in kept}
    fresh: dict[str, Raw] = {}
    if missing:
        works = []
        for part in _split([s for s in subjects if s["ref"] in missing]):
            # a child sees only the part of the graph its subjects' rules can read: the same results, less to load
            visible = visible_refs(part, facts, scoped=scoped)
            seen = documents if visible is None else _restricted(documents, visible)
            only = {s["ref"] for s in part}
            works.append(functools.partial(_evaluate, graph, seen, policies, RegorusEngine, texts=texts, only=only))
        raw, errors = _isolated(works[0], timeout, graph) if len(works) == 1 else _isolated_all(works, timeout, graph)
        if errors:
            return [], errors
        for item in raw:
            fresh.setdefault(item[0], []).append(item)
    results = {
        key: fresh.get(subject["ref"], []) if subject["ref"] in missing else kept[key]
        for subject, key in zip(subjects, keys, strict=True)
    }
    if missing:
        with contextlib.suppress(OSError):  # a read-only checkout still checks, just without keeping results
            cache.store(CACHE_NAMESPACE, record_key, json.dumps(results, default=list).encode())
    return [item for key in keys for item in results[key]], []


def _split(subjects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The subjects dealt round-robin over the usable cores when there are many, else one part."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parts = min(cores, 4) if len(subjects) >= PARALLEL_FROM else 1
    return [subjects[start::parts] for start in range(parts)]


def _restricted(documents: dict[str, Any], refs: set[str]) -> dict[str, Any]:
    """``documents`` with ``data.mlspec.graph`` cut down to ``refs``."""
    graph = documents["graph"]
    kept = [ref for ref in graph["resources"] if ref in refs]
    return {
        **documents,
        "graph": {
            "resources": {ref: graph["resources"][ref] for ref in kept},
            "dependencies": {ref: graph["dependencies"][ref] for ref in kept},
        },
    }


def _read_record(content: bytes | None) -> dict[str, Raw]:
    """A kept record (subject key -> raw results); empty when there is none or it does not read."""
    if content is None:
        return {}
    try:
        record = json.loads(content)
        return {
            str(key): [(str(ref), str(severity), item) for ref, severity, item in items]
            for key, items in record.items()
        }
    except (ValueError, TypeError, AttributeError):
        return {}


def _evaluate(
    graph: ResolvedGraph,
    documents: dict[str, Any],
    policies: PolicySet,
    engine_factory: Callable[[], PolicyEngine],
    *,
    texts: list[tuple[Path, str]] | None = None,
    only: set[str] | None = None,
) -> tuple[Raw, list[Finding]]:
    """The policies' raw results per subject (those in ``only`` when given), or (nothing, why evaluation failed).

    ``texts`` are the policy files as already read (what a kept result is keyed by); else they are read here.
    """
    try:
        engine = engine_factory()
    except PolicyEngineError as exc:
        return [], [_policy_error(graph, f"the policy engine did not start: {exc}", None)]
    read = dict(texts or ())
    for path in policies.files:
        try:
            engine.add_policy(display_path(path), read[path] if path in read else path.read_text(encoding="utf-8"))
        except (PolicyEngineError, OSError, UnicodeDecodeError) as exc:
            return [], [_policy_error(graph, f"policy file {display_path(path)} does not load: {exc}", path)]
    try:
        engine.set_data({"mlspec": {"graph": documents["graph"]}})
    except PolicyEngineError as exc:
        return [], [_policy_error(graph, f"policy data could not be loaded: {exc}", None)]
    raw: Raw = []
    for resource in documents["subjects"]:
        if only is not None and resource["ref"] not in only:
            continue
        document = {"resource": resource, "environment": documents["environment"], "project": documents["project"]}
        try:
            result = engine.evaluate(ROOT_QUERY, document)
        except PolicyEngineError as exc:
            return [], [_policy_error(graph, f"policy evaluation failed for {resource['ref']}: {exc}", None)]
        raw.extend((resource["ref"], severity, item) for severity, item in _walk(result))
    return raw, []


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (severity, finding object) in the result tree of ``data.mlspec.policies``."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("deny", "warn") and isinstance(value, (list, set, tuple)):
            for item in value:
                yield key, item
        elif isinstance(value, dict):
            yield from _walk(value)


def _finding(item: Any, severity: str, spec: ParsedSpec, graph: ResolvedGraph) -> Finding:
    """A Finding from a policy's output object; a malformed object is itself a deny (fail closed)."""
    if not (isinstance(item, dict) and isinstance(item.get("id"), str) and _ID.match(item["id"])) or not isinstance(
        item.get("message"), str
    ):
        return Finding(
            "policy.malformed",
            "deny",
            f"a policy returned a finding without a valid id and message: {item!r}"[:300],
            spec.ref,
            graph.name,
            spec.document.location,
            hint="policy findings are objects {id: 'area.rule', message, path, fix}",
        )
    path = str(item.get("path") or "")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".") if p] if path else []
    return Finding(
        item["id"],
        "deny" if severity == "deny" else "warn",
        item["message"],
        spec.ref,
        graph.name,
        spec.document.locate(parts),
        path,
        str(item.get("fix") or ""),
    )


def _policy_error(graph: ResolvedGraph, message: str, path: Path | None) -> Finding:
    match = _REGO_LOCATION.search(message)
    if match:
        location = Location(match["file"], int(match["line"]), int(match["col"]))
    elif path is not None:
        location = Location(display_path(path), 1, 1)
    else:
        location = graph.environment.document.location
    return Finding(
        "policy.error",
        "deny",
        message.replace("\n", " ").strip(),
        graph.environment.ref,
        graph.name,
        location,
        hint="policies fail closed: fix the policy (run 'mlspec policy test') before anything can apply",
    )


def _isolated(work: Callable[[], Outcome], timeout: float, graph: ResolvedGraph) -> Outcome:
    """Run ``work`` in a forked child with a time limit; any failure becomes a deny finding."""
    return _isolated_all([work], timeout, graph)


def _isolated_all(works: Sequence[Callable[[], Outcome]], timeout: float, graph: ResolvedGraph) -> Outcome:
    """Run each of ``works`` in its own forked child, all at once, within one time limit: their results joined,
    or the first failure as a deny finding (the other children are stopped)."""
    context = multiprocessing.get_context("fork")
    children = [_start(context, work) for work in works]
    deadline = time.monotonic() + timeout
    answered: set[int] = set()
    raw: Raw = []
    try:
        for index, (process, receiver) in enumerate(children):
            try:
                if not receiver.poll(max(deadline - time.monotonic(), 0)):
                    stopped = f"policy evaluation did not finish within {timeout:g} s and was stopped"
                    return [], [_policy_error(graph, stopped, None)]
                status, payload = receiver.recv()
            except EOFError:
                status, payload = "error", f"the policy engine crashed (exit code {process.exitcode})"
            answered.add(index)
            if status != "ok":
                return [], [_policy_error(graph, f"policy evaluation failed: {payload}", None)]
            part, errors = payload
            if errors:
                return [], errors
            raw.extend(part)
        return raw, []
    finally:
        for index, (process, receiver) in enumerate(children):
            if index not in answered:
                process.kill()
            process.join(timeout=5)
            receiver.close()


def _start(context: Any, work: Callable[[], Outcome]) -> tuple[Any, Any]:
    """A forked child running ``work``, and the end of the pipe its answer comes through."""
    receiver, sender = context.Pipe(duplex=False)

    def child() -> None:
        try:
            sender.send(("ok", work()))
        except BaseException as exc:  # report everything to the parent, which fails closed
            sender.send(("error", f"{type(exc).__name__}: {exc}"))
        finally:
            sender.close()

    process = context.Process(target=child, daemon=True)
    process.start()
    sender.close()
    return process, receiver


def engine_factory(engine: str, opa_url: str | None, timeout: float) -> Callable[[], PolicyEngine]:
    """How to make the configured engine: embedded regorus, or an OPA server."""
    if engine == "opa" and opa_url:
        return functools.partial(OpaServerEngine, opa_url, timeout)
    return RegorusEngine
