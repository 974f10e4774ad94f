"""RawDocument: one YAML document's plain data plus its node graph for locations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from mlspec.diagnostics import Location

MERGE_KEY = "<<"


_MISSING = object()


def data_child(container: Any, part: str | int) -> Any:
    """``container[part]`` for plain YAML data, or ``MISSING`` when there is no such key or index."""
    if isinstance(container, dict):
        return container.get(part, _MISSING)
    if isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container):
        return container[part]
    return _MISSING


MISSING: Any = _MISSING


def mark_location(file: str, mark: Any) -> Location:
    """Turn a PyYAML mark (0-based) into a 1-based Location."""
    if mark is None:
        return Location(file, 1, 1)
    return Location(file, mark.line + 1, mark.column + 1)


class SourceDocument(Protocol):
    """Anything validation can read data from and point into: a loaded document, or one with patches."""

    @property
    def file(self) -> str: ...

    @property
    def data(self) -> Any: ...

    @property
    def digest(self) -> str: ...

    @property
    def location(self) -> Location: ...

    def locate(self, path: tuple[str | int, ...] | list[str | int], *, key: bool = False) -> Location: ...


@dataclass(frozen=True, slots=True)
class RawDocument:
    """A parsed YAML document: ``data`` is plain Python, ``node`` keeps positions.

    ``data`` may share sub-objects where the YAML used aliases: treat it as
    read-only (stages copy before they change anything).
    """

    file: str
    index: int
    data: Any
    node: yaml.Node
    digest: str = ""  # sha256 of the file's bytes and the document's index: changes when the text does

    @property
    def location(self) -> Location:
        """Where the document starts."""
        return mark_location(self.file, self.node.start_mark)

    def locate(self, path: tuple[str | int, ...] | list[str | int], *, key: bool = False) -> Location:
        """Location of the node at ``path``; with ``key`` the mapping key's position.

        When the path runs past what exists (a missing field), this returns the
        deepest node that does exist, which is where the fix goes.
        """
        node: yaml.Node = self.node
        target: yaml.Node = node
        for part in path:
            found = _child(node, part)
            if found is None:
                return mark_location(self.file, node.start_mark)
            key_node, node = found
            target = key_node if (key and key_node is not None) else node
        return mark_location(self.file, target.start_mark)


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.SequenceNode):
        if isinstance(part, int) and 0 <= part < len(node.value):
            return None, node.value[part]
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    want = str(part)
    merged: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value == want:
                return key_node, value_node
            if key_node.value == MERGE_KEY and not key_node.style:
                merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
    for source in merged:
        found = _child(source, part)
        if found is not None:
            return found
    return None
