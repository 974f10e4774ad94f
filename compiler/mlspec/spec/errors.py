"""Translate pydantic validation errors into Diagnostics users can act on.

Pydantic reports ``loc`` tuples that mix data keys with union tags; this module
maps them back onto the document (so every message has file:line:column), words
the message for a YAML author, and suggests the field or value that was meant.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel

from mlspec.diagnostics import Diagnostic, format_path
from mlspec.load.documents import RawDocument
from mlspec.spec.base import PATTERN_DESCRIPTIONS
from mlspec.spec.suggest import did_you_mean

_PRIMITIVE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "date"}
_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "date_type": "a date (YYYY-MM-DD)",
    "literal_error": "one of the allowed values",
}
_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}


def describe_input(value: Any) -> str:
    """A short, safe description of an input value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _is_tag(part: Any, container: Any) -> bool:
    """Whether a loc element is a union tag rather than a key of ``container``."""
    if not isinstance(part, str):
        return False
    if isinstance(container, dict):
        if part in container:
            return False
        if part in {v for v in container.values() if isinstance(v, str)}:
            return True  # a discriminator value, e.g. 'canary'
    return part in _PRIMITIVE_TAGS or "[" in part or "-" in part or part[:1].isupper()


def split_loc(loc: tuple[Any, ...], data: Any) -> tuple[list[str | int], list[str | int], bool]:
    """Split a pydantic loc into (path that exists in data, the rest, whether union tags were seen)."""
    path: list[str | int] = []
    current = data
    saw_tag = False
    parts = list(loc)
    for index, part in enumerate(parts):
        if isinstance(current, dict) and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            path.append(part)
            current = current[part]
        elif _is_tag(part, current):
            saw_tag = True
        else:
            return path, [p for p in parts[index:] if not _is_tag(p, None)], saw_tag
    return path, [], saw_tag


def allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names (as written in YAML) of the model found at ``loc`` under ``model``."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return None
    target = _as_model(current)
    if target is None:
        return None
    return [info.alias or name for name, info in target.model_fields.items()]


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [_unwrap(a) for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _as_model(annotation: Any) -> type[BaseModel] | None:
    members = [m for m in _union_members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    return members[0] if len(members) == 1 else None


def _literal_values(model: type[BaseModel]) -> set[Any]:
    values: set[Any] = set()
    for info in model.model_fields.values():
        annotation = _unwrap(info.annotation)
        if typing.get_origin(annotation) is typing.Literal:
            values.update(typing.get_args(annotation))
    return values


def _step(annotation: Any, part: Any) -> Any:
    members = _union_members(annotation)
    if len(members) > 1:
        for member in members:  # a union tag selects a member without descending
            if isinstance(member, type) and (
                member.__name__ == part or (issubclass(member, BaseModel) and part in _literal_values(member))
            ):
                return member
        for member in members:
            found = _step(member, part)
            if found is not None:
                return found
        return None
    single = members[0]
    origin = typing.get_origin(single)
    if isinstance(single, type) and issubclass(single, BaseModel):
        for name, info in single.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    if origin is list and isinstance(part, int):
        return typing.get_args(single)[0]
    if origin is dict:
        return typing.get_args(single)[1]
    return None


def _expected_values(ctx: dict[str, Any], key: str) -> list[str]:
    return re.findall(r"'([^']*)'", str(ctx.get(key, "")))


def translate(errors: list[Any], document: RawDocument, model: type[BaseModel]) -> list[Diagnostic]:
    """Turn pydantic's error list for one document into Diagnostics, one per problem.

    A value that fails a union (``cpu: 2`` or ``cpu: '500m'``) is reported by
    pydantic once per member; the member whose type matched explains best, so
    type mismatches are dropped when another error stands at the same path, and
    merged into one "must be X or Y" otherwise.
    """
    by_path: dict[str, list[Diagnostic]] = {}
    for error in errors:
        diagnostic = _translate_one(error, document, model)
        by_path.setdefault(diagnostic.path, []).append(diagnostic)
    _drop_misspelled_missing(by_path)
    out: list[Diagnostic] = []
    for group in by_path.values():
        typed = [d for d in group if d.code == "wrong-type"]
        others = [d for d in group if d.code != "wrong-type"]
        if len(typed) > 1 and not others:
            words = " or ".join(dict.fromkeys(m.group(1) for d in typed if (m := _EXPECTED_RE.search(d.message))))
            first = typed[0]
            message = _EXPECTED_RE.sub(f"must be {words}, not", first.message, count=1)
            typed = [Diagnostic(first.code, message, first.location, path=first.path)]
        elif others:
            typed = []
        seen: set[str] = set()
        for diagnostic in [*others, *typed]:
            if diagnostic.message not in seen:
                seen.add(diagnostic.message)
                out.append(diagnostic)
    return out


_EXPECTED_RE = re.compile(r"must be (.+?), not")
_GUESS_RE = re.compile(r"^did you mean '([^']+)'\?$")


def _drop_misspelled_missing(by_path: dict[str, list[Diagnostic]]) -> None:
    """``specs:`` for ``spec:`` is one problem, not an unknown field plus a missing one."""
    for path, group in list(by_path.items()):
        for diagnostic in group:
            guess = _GUESS_RE.match(diagnostic.hint) if diagnostic.code == "unknown-field" else None
            if guess is None:
                continue
            parent = path.rpartition(".")[0] if "." in path else ""
            missing_path = f"{parent}.{guess.group(1)}" if parent else guess.group(1)
            missing = by_path.get(missing_path, [])
            remaining = [d for d in missing if d.code != "missing-field"]
            if len(remaining) != len(missing):
                by_path[missing_path] = remaining


def _translate_one(error: Any, document: RawDocument, model: type[BaseModel]) -> Diagnostic:
    loc: tuple[Any, ...] = tuple(error["loc"])
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    path, rest, _ = split_loc(loc, document.data)
    where = format_path(path)

    if loc and loc[-1] == "[key]":  # a mapping key outside the allowed set
        key = str(value)
        expected = _expected_values(ctx, "expected")
        guess = did_you_mean(key, expected)
        parent = format_path(path[:-1]) if path and path[-1] == value else where
        return Diagnostic(
            "unknown-field",
            f"unknown key {key!r} in '{parent}'; expected one of {', '.join(expected)}",
            document.locate(path, key=True),
            path=where,
            hint=f"did you mean '{guess}'?" if guess else "",
        )

    if kind == "missing" or kind == "union_tag_not_found":
        field = str(rest[0]) if rest else str(ctx.get("discriminator", "")).strip("'")
        full = format_path([*path, field])
        parent = f" in '{where}'" if where else ""
        return Diagnostic(
            "missing-field", f"missing required field '{field}'{parent}", document.locate(path), path=full
        )
    if kind == "extra_forbidden":
        field = str(path[-1]) if path else str(loc[-1])
        allowed = allowed_fields(model, loc[:-1]) or []
        guess = did_you_mean(field, allowed)
        parent = format_path(path[:-1])
        hint = f"did you mean '{guess}'?" if guess else (f"allowed fields: {', '.join(allowed)}" if allowed else "")
        inside = f" in '{parent}'" if parent else ""
        return Diagnostic(
            "unknown-field", f"unknown field '{field}'{inside}", document.locate(path, key=True), path=where, hint=hint
        )
    if kind == "union_tag_invalid":
        field = str(ctx.get("discriminator", "")).strip("'")
        tag = str(ctx.get("tag", ""))
        expected = _expected_values(ctx, "expected_tags")
        guess = did_you_mean(tag, expected)
        full_path = [*path, field]
        return Diagnostic(
            "invalid-value",
            f"'{format_path(full_path)}' is {tag!r}; expected one of {', '.join(expected)}",
            document.locate(full_path),
            path=format_path(full_path),
            hint=f"did you mean '{guess}'?" if guess else "",
        )
    if kind == "literal_error":
        expected = _expected_values(ctx, "expected")
        guess = did_you_mean(str(value), expected) if isinstance(value, str) else None
        return Diagnostic(
            "invalid-value",
            f"'{where}' is {describe_input(value)}; expected one of {', '.join(expected)}",
            document.locate(path),
            path=where,
            hint=f"did you mean '{guess}'?" if guess else "",
        )
    if kind == "string_pattern_mismatch":
        description = PATTERN_DESCRIPTIONS.get(str(ctx.get("pattern", "")), f"a value matching {ctx.get('pattern')}")
        return Diagnostic(
            "invalid-value",
            f"'{where}' is {describe_input(value)}; expected {description}",
            document.locate(path),
            path=where,
        )
    if kind in _TYPE_WORDS or kind.endswith("_type"):
        expected_word = _TYPE_WORDS.get(kind, kind.removesuffix("_type"))
        hint = ""
        if kind == "bool_type" and isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            hint = f"mlspec reads YAML 1.2, where {value!r} is a string: write true or false"
        elif isinstance(value, str) and kind in {"int_type", "float_type"}:
            hint = "remove the quotes around the number"
        elif isinstance(value, (int, float)) and kind == "string_type":
            hint = "quote the value to make it a string"
        shown = "" if isinstance(value, (dict, list)) or value is None else f" ({describe_input(value)})"
        return Diagnostic(
            "wrong-type",
            f"'{where}' must be {expected_word}, not {_type_name(value)}{shown}",
            document.locate(path),
            path=where,
            hint=hint,
        )
    if kind == "value_error":
        message = str(ctx.get("error", error.get("msg", "invalid value")))
        message = message.removeprefix("Value error, ")
        return Diagnostic(
            "invalid-value", f"'{where}': {message}" if where else message, document.locate(path), path=where
        )
    if kind.startswith("date_"):
        detail = str(ctx.get("error", "")).strip()
        return Diagnostic(
            "invalid-value",
            f"'{where}' is {describe_input(value)}; expected a date like 2027-03-31" + (f" ({detail})" if detail else ""),
            document.locate(path),
            path=where,
        )
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long"}:
        return Diagnostic(
            "out-of-range",
            f"'{where}' is {describe_input(value)}: {_range_words(kind, ctx)}",
            document.locate(path),
            path=where,
        )
    return Diagnostic(
        "invalid-value",
        f"'{where}' is {describe_input(value)}: {error.get('msg', 'invalid value')}",
        document.locate(path),
        path=where,
    )


def _range_words(kind: str, ctx: dict[str, Any]) -> str:
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} item(s)"
    words = {
        "greater_than": "must be greater than",
        "greater_than_equal": "must be at least",
        "less_than": "must be less than",
        "less_than_equal": "must be at most",
    }
    bound = next((v for k, v in ctx.items() if k in {"gt", "ge", "lt", "le"}), "")
    return f"{words[kind]} {bound}"
