"""Editing an environment file's ``overrides`` as text, so that its comments and layout survive.

Promotion appends one entry per promoted resource, headed by a ``# promoted from <env>
by mlspec promote`` comment, and drops the earlier promoted entry of a resource it
promotes again. Values are written as one line of YAML flow style (:func:`flow`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mlspec.errors import MlspecError

HEADER = "# promoted from {source} by mlspec promote"
_BLOCK_RE = re.compile(
    r"^(?P<indent>[ \t]*)# promoted from \S+ by mlspec promote[^\n]*\n"
    r"(?P=indent)- target: (?P<ref>\S+)[ \t]*\n"
    r"(?P=indent)  patch: [^\n]*\n",
    re.MULTILINE,
)
_PLAIN_RE = re.compile(r"^[A-Za-z_][-A-Za-z0-9_./]*$")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"})


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


def promoted_entries(text: str, refs: set[str]) -> set[int]:
    """0-based line numbers of the ``- target:`` lines of earlier promoted entries for ``refs``."""
    found = set()
    for match in _BLOCK_RE.finditer(text):
        if match.group("ref") in refs:
            found.add(text.count("\n", 0, match.start()) + 1)
    return found
