"""Translate pydantic validation errors into Diagnostics users can act on.

Pydantic reports ``loc`` tuples that mix data keys with union tags; this module
maps them back onto the document (so every message has file:line:column), words
the message for a YAML author, and suggests the field or value that was meant.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mlspec.diagnostics import Diagnostic, format_path
from mlspec.load.documents import MISSING, SourceDocument, data_child
from mlspec.spec.base import PATTERN_DESCRIPTIONS, FieldError
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
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


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


def split_loc(loc: tuple[Any, ...], data: Any) -> tuple[list[str | int], list[str | int]]:
    """Split a pydantic loc into (the path that exists in data, the rest), dropping union tags."""
    path: list[str | int] = []
    current = data
    parts = list(loc)
    for index, part in enumerate(parts):
        child = data_child(current, part)
        if child is not MISSING:
            path.append(part)
            current = child
        elif not _is_tag(part, current):
            return path, [p for p in parts[index:] if not _is_tag(p, None)]
    return path, []


def model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model found at ``loc`` under ``model`` (union tags in ``loc`` select a member)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return None
    return _as_model(current)


def allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names (as written in YAML) of the model found at ``loc`` under ``model``."""
    target = model_at(model, loc)
    if target is None:
        return None
    return [info.alias or name for name, info in target.model_fields.items()]


def misplaced_message(model: type[BaseModel], loc: tuple[Any, ...], field: str) -> str | None:
    """Why ``field`` does not belong in the model at ``loc``, where that model knows (its ``misplaced``).

    A model that is one member of a union (a Deployment mode) names the fields of
    its siblings, so ``rollout`` in a batch Deployment says it belongs to online mode.
    """
    misplaced = getattr(model_at(model, loc), "misplaced", None)
    message = misplaced(field) if callable(misplaced) else None
    return message if isinstance(message, str) else None


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


def translate(errors: list[Any], document: SourceDocument, model: type[BaseModel]) -> list[Diagnostic]:
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


@dataclass(frozen=True)
class _Error:
    """One pydantic error with its loc mapped onto the document."""

    loc: tuple[Any, ...]
    kind: str
    ctx: dict[str, Any]
    value: Any
    msg: str
    path: list[str | int]
    rest: list[str | int]
    document: SourceDocument
    model: type[BaseModel]

    @property
    def where(self) -> str:
        return format_path(self.path)

    def at(self, code: str, message: str, *, hint: str = "", key: bool = False) -> Diagnostic:
        return Diagnostic(code, message, self.document.locate(self.path, key=key), path=self.where, hint=hint)


def _suggest(word: Any, candidates: list[str]) -> str:
    guess = did_you_mean(word, candidates) if isinstance(word, str) else None
    return f"did you mean '{guess}'?" if guess else ""


def _bad_key(e: _Error) -> Diagnostic:
    expected = _expected_values(e.ctx, "expected")
    parent = format_path(e.path[:-1]) if e.path and e.path[-1] == e.value else e.where
    return e.at(
        "unknown-field",
        f"unknown key {str(e.value)!r} in '{parent}'; expected one of {', '.join(expected)}",
        hint=_suggest(str(e.value), expected),
        key=True,
    )


def _missing(e: _Error) -> Diagnostic:
    if e.kind == "missing":  # the loc ends with the field (which may equal a sibling's value, like mode: batch)
        field = str(e.loc[-1])
    else:
        field = str(e.rest[0]) if e.rest else str(e.ctx.get("discriminator", "")).strip("'")
    parent = f" in '{e.where}'" if e.where else ""
    return Diagnostic(
        "missing-field",
        f"missing required field '{field}'{parent}",
        e.document.locate(e.path),
        path=format_path([*e.path, field]),
    )


def _unknown_field(e: _Error) -> Diagnostic:
    field = str(e.path[-1]) if e.path else str(e.loc[-1])
    misplaced = misplaced_message(e.model, e.loc[:-1], field)
    if misplaced is not None:
        return e.at("invalid-value", f"'{e.where}': {misplaced}")
    allowed = allowed_fields(e.model, e.loc[:-1]) or []
    parent = format_path(e.path[:-1])
    hint = _suggest(field, allowed) or (f"allowed fields: {', '.join(allowed)}" if allowed else "")
    inside = f" in '{parent}'" if parent else ""
    return e.at("unknown-field", f"unknown field '{field}'{inside}", hint=hint, key=True)


def _bad_tag(e: _Error) -> Diagnostic:
    tagged = _Error(**{**e.__dict__, "path": [*e.path, str(e.ctx.get("discriminator", "")).strip("'")]})
    expected = _expected_values(e.ctx, "expected_tags")
    tag = e.ctx["tag"] if "tag" in e.ctx else data_child(e.value, tagged.path[-1])  # a callable discriminator's
    return tagged.at(
        "invalid-value",
        f"'{tagged.where}' is {describe_input(tag)}; expected one of {', '.join(expected)}",
        hint=_suggest(tag, expected),
    )


def _bad_literal(e: _Error) -> Diagnostic:
    expected = _expected_values(e.ctx, "expected")
    return e.at(
        "invalid-value",
        f"'{e.where}' is {describe_input(e.value)}; expected one of {', '.join(expected)}",
        hint=_suggest(e.value, expected),
    )


def _bad_pattern(e: _Error) -> Diagnostic:
    pattern = str(e.ctx.get("pattern", ""))
    description = PATTERN_DESCRIPTIONS.get(pattern, f"a value matching {pattern}")
    return e.at("invalid-value", f"'{e.where}' is {describe_input(e.value)}; expected {description}")


def _wrong_type(e: _Error) -> Diagnostic:
    value = e.value
    hint = ""
    if e.kind == "bool_type" and isinstance(value, str) and value.lower() in _YAML11_BOOLS:
        hint = f"mlspec reads YAML 1.2, where {value!r} is a string: write true or false"
    elif isinstance(value, str) and e.kind in {"int_type", "float_type"}:
        hint = "remove the quotes around the number"
    elif isinstance(value, (int, float)) and e.kind == "string_type":
        hint = "quote the value to make it a string"
    shown = "" if isinstance(value, (dict, list)) or value is None else f" ({describe_input(value)})"
    expected = _TYPE_WORDS.get(e.kind, e.kind.removesuffix("_type"))
    return e.at("wrong-type", f"'{e.where}' must be {expected}, not {_type_name(value)}{shown}", hint=hint)


def _failed_check(e: _Error) -> Diagnostic:
    cause = e.ctx.get("error")
    message = str(cause if cause is not None else e.msg).removeprefix("Value error, ")
    if isinstance(cause, FieldError):  # a cross-field check that knows which field is wrong
        e = _Error(**{**e.__dict__, "path": [*e.path, *cause.field]})
    return e.at("invalid-value", f"'{e.where}': {message}")


def _bad_date(e: _Error) -> Diagnostic:
    detail = str(e.ctx.get("error", "")).strip()
    suffix = f" ({detail})" if detail else ""
    return e.at("invalid-value", f"'{e.where}' is {describe_input(e.value)}; expected a date like 2027-03-31{suffix}")


def _out_of_range(e: _Error) -> Diagnostic:
    return e.at("out-of-range", f"'{e.where}' is {describe_input(e.value)}: {_range_words(e.kind, e.ctx)}")


_HANDLERS: dict[str, Callable[[_Error], Diagnostic]] = {
    "missing": _missing,
    "union_tag_not_found": _missing,
    "extra_forbidden": _unknown_field,
    "union_tag_invalid": _bad_tag,
    "unknown_tag": _bad_tag,  # a callable Discriminator's error (Deployment modes)
    "literal_error": _bad_literal,
    "string_pattern_mismatch": _bad_pattern,
    "value_error": _failed_check,
    **dict.fromkeys(
        ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long"), _out_of_range
    ),
}


def _translate_one(error: Any, document: SourceDocument, model: type[BaseModel]) -> Diagnostic:
    loc: tuple[Any, ...] = tuple(error["loc"])
    path, rest = split_loc(loc, document.data)
    e = _Error(
        loc, error["type"], error.get("ctx") or {}, error.get("input"), error.get("msg", "invalid value"),
        path, rest, document, model,
    )  # fmt: skip
    if loc and loc[-1] == "[key]":  # a mapping key outside the allowed set
        return _bad_key(e)
    handler = _HANDLERS.get(e.kind)
    if handler is None and (e.kind in _TYPE_WORDS or e.kind.endswith("_type")):
        handler = _wrong_type
    if handler is None and e.kind.startswith("date_"):
        handler = _bad_date
    if handler is not None:
        return handler(e)
    return e.at("invalid-value", f"'{e.where}' is {describe_input(e.value)}: {e.msg}")


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
