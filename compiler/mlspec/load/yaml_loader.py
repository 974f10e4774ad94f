"""Safe YAML loading with source locations, limits and YAML 1.2 core scalars.

libyaml (PyYAML's C parser) builds the node graph; this module turns nodes into
plain Python itself instead of using PyYAML's constructors, so that:

* only the YAML 1.2 core schema applies (``on``/``yes``/``no`` stay strings,
  no timestamps, no Python tags): what you write is what you get;
* duplicate keys are errors that name both places;
* aliases are never expanded past ``Limits.max_alias_nodes`` ("billion laughs");
* nesting deeper than ``Limits.max_depth`` is refused before libyaml's
  recursive composer could exhaust the C stack.

Every problem becomes a Diagnostic; nothing here raises for bad input.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import Any

import yaml
from yaml.cyaml import CParser  # type: ignore[attr-defined]

from mlspec.diagnostics import HIDDEN_CHARACTERS, Diagnostic, Location
from mlspec.load.documents import MERGE_KEY, RawDocument, mark_location
from mlspec.load.limits import Limits

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"

# libyaml's composer recurses in C; below this bound on possible depth it is safe
# to compose directly, above it the depth is measured first with the event parser.
_COMPOSE_SAFE_DEPTH = 2000


_IMPLICIT: list[tuple[str, re.Pattern[str], str]] = [
    (_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), "tTfF"),
    (_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), "-+0123456789"),
    (
        _FLOAT,
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        "-+.0123456789",
    ),
    (_NULL, re.compile(r"^(?:~|null|Null|NULL)$"), "~nN"),
]
# First character -> the resolvers that can match a plain scalar starting with it.
_BY_FIRST: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
for _tag, _regex, _first in _IMPLICIT:
    for _char in _first:
        _BY_FIRST.setdefault(_char, []).append((_tag, _regex))


class _Composer(CParser, yaml.resolver.BaseResolver):
    """libyaml parser + composer that resolves plain scalars by the YAML 1.2 core schema; constructs nothing."""

    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        yaml.resolver.BaseResolver.__init__(self)

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        # Called by libyaml for every node; kept lean since it runs once per scalar.
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR
            if value == "":
                return _NULL
            for tag, regex in _BY_FIRST.get(value[0], ()):
                if regex.match(value):
                    return tag
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


class _LimitError(Exception):
    def __init__(self, code: str, message: str, node: yaml.Node, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.node = node
        self.hint = hint


class _Builder:
    """Turns one document's node graph into plain Python, collecting problems."""

    def __init__(self, file: str, limits: Limits) -> None:
        self.file = file
        self.limits = limits
        self.diagnostics: list[Diagnostic] = []
        self.alias_nodes = 0
        self._memo: dict[int, tuple[Any, int]] = {}
        self._heights: dict[int, int] = {}  # levels below each container, so a reused alias cannot hide depth

    def build(self, node: yaml.Node) -> Any:
        value, _ = self._build(node, 0)
        return value

    def _build(self, node: yaml.Node, depth: int) -> tuple[Any, int]:
        memo = self._memo.get(id(node))
        if memo is not None:  # an alias: the same node again
            self.alias_nodes += memo[1]
            if self.alias_nodes > self.limits.max_alias_nodes:
                raise _LimitError(
                    "alias-limit",
                    f"aliases expand to more than {self.limits.max_alias_nodes} nodes",
                    node,
                    "a YAML alias bomb ('billion laughs') is refused; inline the data or use fewer aliases",
                )
            if depth + self._heights.get(id(node), 0) > self.limits.max_depth:
                raise _LimitError(
                    "nesting-too-deep",
                    f"nesting is deeper than {self.limits.max_depth} levels (through aliases)",
                    node,
                    "flatten the structure; no mlspec spec needs this depth",
                )
            return memo
        if depth > self.limits.max_depth:
            raise _LimitError(
                "nesting-too-deep",
                f"nesting is deeper than {self.limits.max_depth} levels",
                node,
                "flatten the structure; no mlspec spec needs this depth",
            )
        if isinstance(node, yaml.ScalarNode):
            result: tuple[Any, int] = (self._scalar(node), 1)
        elif isinstance(node, yaml.SequenceNode):
            self._check_tag(node, _SEQ)
            items: list[Any] = []
            size = 1
            for child in node.value:
                value, child_size = self._build(child, depth + 1)
                items.append(value)
                size += child_size
            result = (items, size)
            self._heights[id(node)] = 1 + max((self._heights.get(id(c), 0) for c in node.value), default=0)
        elif isinstance(node, yaml.MappingNode):
            self._check_tag(node, _MAP)
            result = self._mapping(node, depth)
            children = [v for _, v in node.value] + [
                s
                for k, v in node.value
                if k.value == MERGE_KEY
                for s in (v.value if isinstance(v, yaml.SequenceNode) else [v])
            ]
            self._heights[id(node)] = 1 + max((self._heights.get(id(c), 0) for c in children), default=0)
        else:  # pragma: no cover - libyaml produces only the three node kinds
            raise TypeError(f"unexpected YAML node {type(node).__name__}")
        self._memo[id(node)] = result
        return result

    def _mapping(self, node: yaml.MappingNode, depth: int) -> tuple[dict[Any, Any], int]:
        out: dict[Any, Any] = {}
        key_nodes: dict[Any, yaml.Node] = {}
        merged: list[dict[Any, Any]] = []
        size = 1
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self._error(
                    "invalid-key",
                    "mapping keys must be plain scalars, not lists or mappings",
                    key_node,
                )
                continue
            if key_node.value == MERGE_KEY and not key_node.style:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    value, child_size = self._build(source, depth + 1)
                    size += child_size
                    if isinstance(value, dict):
                        merged.append(value)
                    else:
                        self._error("invalid-merge", "a merge key '<<' takes a mapping or a list of them", source)
                continue
            key = key_node.value  # keys are names: `on`, `true` or `0x10` stay as written
            first = key_nodes.get(key)
            if first is not None:
                self._error(
                    "duplicate-key",
                    f"duplicate key {key!r} (first defined at line {first.start_mark.line + 1})",
                    key_node,
                    hint="YAML keeps only one value per key; remove or rename one of them",
                    related=(mark_location(self.file, first.start_mark),),
                )
                continue
            key_nodes[key] = key_node
            value, child_size = self._build(value_node, depth + 1)
            out[key] = value
            size += child_size
        for source in merged:  # explicit keys win, then earlier merge sources over later ones (YAML spec)
            for key, value in source.items():
                out.setdefault(key, value)
        return out, size

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        value: str = node.value
        if tag in (_STR, "!"):
            hidden = HIDDEN_CHARACTERS.search(value)
            if hidden is not None:  # it would reach a terminal, a report or a PR comment looking like something else
                self._error(
                    "invalid-character",
                    f"the text holds the invisible or control character U+{ord(hidden.group()):04X}",
                    node,
                    hint="remove it: bidirectional overrides and control characters can make text read differently "
                    "from what it is",
                )
            return value
        if tag == _INT:
            if len(value) > 64:
                self._error("number-too-large", f"the number {value[:20]}... has {len(value)} digits", node)
                return 0
            if value.startswith("0o"):
                return int(value[2:], 8)
            if value.startswith("0x"):
                return int(value[2:], 16)
            return int(value)
        if tag == _FLOAT:
            lowered = value.lower()
            if lowered.endswith(".inf"):
                return float("-inf") if lowered.startswith("-") else float("inf")
            if lowered == ".nan":
                return float("nan")
            return float(value)
        if tag == _BOOL:
            return value.lower() == "true"
        if tag == _NULL:
            return None
        self._error(
            "unsupported-tag",
            f"YAML tag {tag!r} is not supported",
            node,
            hint="specs are plain data: remove the tag (only strings, numbers, booleans, null, lists and mappings)",
        )
        return value

    def _check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            self._error(
                "unsupported-tag",
                f"YAML tag {node.tag!r} is not supported",
                node,
                hint="specs are plain data: remove the tag",
            )

    def _error(
        self,
        code: str,
        message: str,
        node: yaml.Node,
        hint: str = "",
        related: tuple[Location, ...] = (),
    ) -> None:
        self.diagnostics.append(
            Diagnostic(code, message, mark_location(self.file, node.start_mark), hint=hint, related=related)
        )


def _too_large(display: str, size: int, limits: Limits) -> Diagnostic:
    return Diagnostic(
        "file-too-large",
        f"file is {size} bytes, over the limit of {limits.max_file_bytes}",
        Location(display, 1, 1),
        hint="split it into smaller files (or raise limits.max_file_bytes in mlspec.yaml)",
    )


def load_file(path: str | os.PathLike[str], display: str, limits: Limits) -> tuple[list[RawDocument], list[Diagnostic]]:
    """Load every document of one YAML file; ``display`` is the name used in messages."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            return [], [
                Diagnostic("unreadable-file", "not a regular file (a pipe, device or socket)", Location(display, 1, 1))
            ]
        size = info.st_size
        if size > limits.max_file_bytes:
            return [], [_too_large(display, size, limits)]
        with open(path, "rb") as handle:
            data = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        return [], [Diagnostic("unreadable-file", f"cannot read file: {exc.strerror}", Location(display))]
    return load_bytes(data, display, limits)


def load_bytes(data: bytes, display: str, limits: Limits) -> tuple[list[RawDocument], list[Diagnostic]]:
    """Load every document from raw bytes (UTF-8, optionally with a BOM)."""
    if len(data) > limits.max_file_bytes:
        return [], [_too_large(display, len(data), limits)]
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _line_col(data, nul)
        return [], [
            Diagnostic(
                "binary-file",
                "file is binary, not YAML text (NUL byte)",
                Location(display, line, column),
                hint="only UTF-8 YAML files belong in spec folders",
            )
        ]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_col(data, exc.start)
        return [], [
            Diagnostic(
                "not-utf8",
                f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                Location(display, line, column),
                hint="save the file as UTF-8",
            )
        ]
    if text.startswith("\ufeff"):
        text = text[1:]
    too_deep = _too_deep(text, display, limits)
    if too_deep is not None:
        return [], [too_deep]
    return _compose_all(text, display, limits, hashlib.sha256(data).hexdigest())


def _compose_all(text: str, display: str, limits: Limits, digest: str) -> tuple[list[RawDocument], list[Diagnostic]]:
    documents: list[RawDocument] = []
    diagnostics: list[Diagnostic] = []
    composer = _Composer(text)
    index = 0
    try:
        while composer.check_node():
            node = composer.get_node()
            if node is None:
                break
            if index >= limits.max_documents:  # the file is refused whole: one error, not one per document
                return [], [
                    Diagnostic(
                        "too-many-documents",
                        f"more than {limits.max_documents} documents in one file",
                        mark_location(display, node.start_mark),
                        hint="split it into several files",
                    )
                ]
            builder = _Builder(display, limits)
            try:
                value = builder.build(node)
            except _LimitError as exc:
                diagnostics.append(
                    Diagnostic(exc.code, exc.message, mark_location(display, exc.node.start_mark), hint=exc.hint)
                )
                index += 1
                continue
            diagnostics.extend(builder.diagnostics)
            if value is not None or index == 0:
                documents.append(RawDocument(display, index, value, node, f"{digest}:{index}"))
            index += 1
    except yaml.YAMLError as exc:
        diagnostics.append(_syntax_diagnostic(exc, text, display))
    finally:
        composer.dispose()
    if not documents and not diagnostics:
        diagnostics.append(
            Diagnostic(
                "empty-file",
                "file holds no YAML documents",
                Location(display, 1, 1),
                hint="add a spec or delete the file",
            )
        )
    # A lone null document (a file of comments, or `---` alone) is as empty as none.
    if len(documents) == 1 and documents[0].data is None:
        return [], [
            *diagnostics,
            Diagnostic(
                "empty-file",
                "file holds no YAML documents (only comments or an empty document)",
                Location(display, 1, 1),
                hint="add a spec or delete the file",
            ),
        ]
    return documents, diagnostics


def _too_deep(text: str, display: str, limits: Limits) -> Diagnostic | None:
    """Refuse input nested deeper than the limit before libyaml recurses into it.

    Block nesting needs one column per level and flow nesting one bracket per
    level, so (longest line + number of opening brackets) bounds the depth. Only
    when that bound is high is the exact depth measured with the event parser,
    which libyaml runs without recursion.
    """
    bound = text.count("[") + text.count("{") + max(map(len, text.split("\n")), default=0)
    if bound <= _COMPOSE_SAFE_DEPTH:
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > limits.max_depth:
                    return Diagnostic(
                        "nesting-too-deep",
                        f"nesting is deeper than {limits.max_depth} levels",
                        mark_location(display, event.start_mark),
                        hint="flatten the structure; no mlspec spec needs this depth",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # the composer reports the syntax error with its location
    return None


def _syntax_diagnostic(exc: yaml.YAMLError, text: str, display: str) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        location = mark_location(display, mark)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        context = getattr(exc, "context", None)
        message = f"{problem}" + (f" ({context})" if context else "")
    else:
        position = getattr(exc, "position", 0) or 0
        # libyaml counts UTF-8 bytes, not characters
        position = len(text.encode()[:position].decode("utf-8", errors="ignore"))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        location = Location(display, line, column)
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        message = str(reason)
    hint = ""
    lowered = message.lower()
    offending = _char_at(text, location.line, location.column)
    if "tab" in lowered or offending == "\t":
        hint = "YAML indentation uses spaces, not tabs"
    elif "mapping values are not allowed" in lowered:
        hint = "put a space after ':' in 'key: value', or quote a value that contains ': '"
    elif "could not find expected ':'" in lowered:
        hint = "a key needs ': ' after it; check the indentation of this line"
    return Diagnostic("yaml-syntax", message, location, hint=hint)


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n", line)
    if line - 1 < len(lines) and 0 < column <= len(lines[line - 1]):
        return lines[line - 1][column - 1]
    return ""


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, len(data[start:offset].decode("utf-8", errors="replace")) + 1
