"""Which kept policy results still hold after a change: one key per subject, covering everything its rules read.

Policies are evaluated once per subject (a resource or the Environment) with the
whole graph as ``data.mlspec.graph``. A subject's results are a function of its
input (its own document, the environment, the project) and of the graph facts its
rules read. When every policy module is *scoped*, those facts are the resources
and dependency lists reachable from the subject (and, for a TrainingPipeline, from
the FeatureService its ``spec.features`` names): the built-in library reads the
graph only through ``lib.upstream`` of those refs (reviewed: keep it so when you
change the library; ``tests/unit/test_policy_reuse.py`` compares reuse with a full
evaluation on random edits), and a project module is scoped when it reads nothing but its
input (no ``data``, no ``with``, a package under ``mlspec.policies``). The key of a
subject then covers exactly that, so editing one spec re-evaluates only the
subjects that can see it. When any module is not scoped, every key covers the
whole graph, and any change re-evaluates everything, as a full evaluation would.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIBRARY = Path(__file__).parent / "library"
_STRINGS_AND_COMMENTS = re.compile(r'"(?:\\.|[^"\\\n])*"|`[^`]*`|#[^\n]*')
_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z0-9_.]+)\s*$", re.MULTILINE)
_SCOPED_PACKAGE = re.compile(r"^mlspec\.policies(\.[A-Za-z0-9_]+)*$")
_GRAPH_READS = re.compile(r"\b(data|with)\b")


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _hash(data: Any) -> str:
    return hashlib.sha256(_ENCODER.encode(data).encode()).hexdigest()


def reads_only_input(text: str) -> bool:
    """Whether a Rego module can only read its input: no ``data`` reference, no ``with``, a policy package.

    Conservative: a module that fails this may well be scoped too; it only costs
    reuse (every change then evaluates everything again).
    """
    code = _STRINGS_AND_COMMENTS.sub(" ", text)
    packages = _PACKAGE.findall(code)
    return len(packages) == 1 and bool(_SCOPED_PACKAGE.match(packages[0])) and not _GRAPH_READS.search(code)


def policies_scoped(modules: Iterable[tuple[Path, str]]) -> bool:
    """Whether every module reads the graph only around its subject (the library, or input-only modules)."""
    return all(path.parent == LIBRARY or reads_only_input(text) for path, text in modules)


@dataclass(frozen=True)
class GraphFacts:
    """What policies can see of one graph: each resource's content digest and its dependency list."""

    digests: Mapping[str, str]
    dependencies: Mapping[str, Sequence[str]]
    _upstream: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    def upstream(self, ref: str, visiting: frozenset[str] = frozenset()) -> str | None:
        """A digest of every fact reachable from ``ref`` (its own included); None on a dependency cycle.

        A Merkle hash: ``ref``'s digest, its dependency list and, in that order, the
        same digest of each dependency. Equal digests mean equal facts within reach.
        """
        if ref in self._upstream:
            return self._upstream[ref]
        if ref in visiting:
            return None
        dependencies = self.dependencies.get(ref)
        below = [self.upstream(dep, visiting | {ref}) for dep in dependencies or ()]
        found = None if None in below else _hash([ref, self.digests.get(ref), dependencies, below])
        self._upstream[ref] = found
        return found

    def reach(self, roots: Iterable[str]) -> set[str]:
        """Every ref reachable from ``roots`` through the dependency lists, the roots included."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            ref = stack.pop()
            if ref not in seen:
                seen.add(ref)
                stack.extend(self.dependencies.get(ref, ()))
        return seen

    def whole(self) -> str:
        """A digest of every fact."""
        refs = sorted(set(self.digests) | set(self.dependencies))
        return _hash([[ref, self.digests.get(ref), self.dependencies.get(ref)] for ref in refs])


def document_digest(document: Mapping[str, Any]) -> str:
    """The content digest of one subject's document as policies see it."""
    return _hash(document)


def subject_roots(document: Mapping[str, Any]) -> list[str] | None:
    """The refs whose upstream a subject's rules may read; None when that cannot be told.

    Every subject's own ref (``lib.upstream(lib.resource.ref)``), and for a
    TrainingPipeline the FeatureService its ``spec.features`` names
    (``lib.pii_feature_sources``, which only the pipeline rules call).
    """
    roots = [str(document["ref"])]
    if document.get("kind") == "TrainingPipeline":
        spec = document.get("spec")
        features = spec.get("features") if isinstance(spec, Mapping) else None
        if not isinstance(features, str):
            return None  # Rego would format whatever this is into a ref; do not guess which
        roots.append(f"FeatureService/{features}")
    return roots


def subject_keys(
    subjects: Sequence[tuple[Mapping[str, Any], str]],
    facts: GraphFacts,
    context: Any,
    *,
    scoped: bool,
) -> list[str]:
    """One key per subject (document, its digest): equal keys mean equal results under the same policies.

    ``context`` is everything every subject reads (policy texts, environment, project).
    """
    base = _hash(context)
    whole: str | None = None
    keys: list[str] = []
    for document, digest in subjects:
        roots = subject_roots(document) if scoped else None
        scope: list[str | None] | str = [facts.upstream(ref) for ref in roots] if roots is not None else []
        if roots is None or None in scope:
            whole = whole or facts.whole()
            scope = whole
        keys.append(_hash([base, digest, scope]))
    return keys


def visible_refs(subjects: Iterable[Mapping[str, Any]], facts: GraphFacts, *, scoped: bool) -> set[str] | None:
    """The graph refs the rules of these subjects can read; None for the whole graph (not scoped, or unknown roots)."""
    if not scoped:
        return None
    roots: list[str] = []
    for document in subjects:
        found = subject_roots(document)
        if found is None:
            return None
        roots.extend(found)
    return facts.reach(roots)
