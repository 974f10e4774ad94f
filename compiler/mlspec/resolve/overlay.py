"""Environment overrides: JSON Merge Patch (RFC 7386) onto a spec, located in the environment file.

A patch merges mappings key by key, replaces lists and scalars, and deletes a key
whose patch value is ``null``. It may change ``spec`` and ``metadata`` labels,
description and owner, never a resource's identity. The patched spec is validated
again; a problem in a value that came from the patch points at the environment
file, anything else at the spec's own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlspec.diagnostics import Diagnostic, Location
from mlspec.hashing import canonical, digest
from mlspec.load.documents import MISSING, SourceDocument, data_child
from mlspec.spec.registry import RESOURCE_KINDS
from mlspec.spec.validate import ParsedSpec, validate_document

Path = tuple[str | int, ...]
PATCHABLE_METADATA = frozenset({"labels", "description", "owner"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch; returns a new value and never changes ``target``."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass(frozen=True)
class Patch:
    """One override's patch: the environment document and the path of its ``patch`` node."""

    document: SourceDocument
    path: Path

    @property
    def data(self) -> Any:
        node: Any = self.document.data
        for part in self.path:
            node = node[part]
        return node

    def covers(self, path: tuple[str | int, ...] | list[str | int]) -> bool:
        """Whether the value at ``path`` was written by this patch."""
        node = self.data
        for part in path:
            node = data_child(node, part)
            if node is MISSING:
                return False
        return True


@dataclass(frozen=True)
class PatchedDocument:
    """A spec document with environment patches applied; locations point at whichever file wrote the value."""

    base: SourceDocument
    data: Any
    patches: tuple[Patch, ...]

    @property
    def file(self) -> str:
        return self.base.file

    @property
    def digest(self) -> str:
        """The spec's digest combined with every patch applied to it."""
        return digest(self.base.digest, *(canonical(p.data) for p in self.patches))

    @property
    def location(self) -> Location:
        return self.base.location

    def locate(self, path: tuple[str | int, ...] | list[str | int], *, key: bool = False) -> Location:
        """The location of ``path``: in the last patch that wrote it, else in the spec itself."""
        for patch in reversed(self.patches):
            if patch.covers(path):
                return patch.document.locate((*patch.path, *path), key=key)
        return self.base.locate(path, key=key)


def check_patch(patch: Patch) -> list[Diagnostic]:
    """Refuse patches that would change what a resource is rather than how it is configured."""
    problems = []
    data = patch.data
    for key in data:
        if key == "metadata" and isinstance(data[key], dict):
            for meta_key in data[key]:
                if meta_key not in PATCHABLE_METADATA:
                    problems.append(_identity_change(patch, ("metadata", meta_key)))
        elif key != "spec":
            problems.append(_identity_change(patch, (key,)))
    return problems


def _identity_change(patch: Patch, path: Path) -> Diagnostic:
    return Diagnostic(
        "invalid-override",
        f"an override may not change '{'.'.join(str(p) for p in path)}'",
        patch.document.locate((*patch.path, *path), key=True),
        path=".".join(str(p) for p in (*patch.path, *path)),
        hint="overrides patch 'spec' and metadata labels, description or owner; define another resource instead",
    )


def apply_patches(spec: ParsedSpec, patches: list[Patch]) -> tuple[ParsedSpec | None, list[Diagnostic]]:
    """Apply ``patches`` in order to ``spec`` and validate the result."""
    data = spec.document.data
    for patch in patches:
        data = merge_patch(data, patch.data)
    document = PatchedDocument(spec.document, data, tuple(patches))
    return validate_document(document, RESOURCE_KINDS)
