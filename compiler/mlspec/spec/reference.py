"""The field reference (docs/reference.md), generated from the same models that validate.

Every field of every kind, as a YAML path with its type, whether it is required (or its default) and its
description (``Field(description=...)``, which editors also show through the JSON Schema). A test keeps
the committed file equal to what this module writes, so the reference cannot drift from the validator;
another fails when a field has no description.
"""

from __future__ import annotations

import datetime
import json
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mlspec.spec import base
from mlspec.spec.registry import ALL_KINDS

REGENERATE = "make reference (PYTHONPATH=compiler python -m mlspec.spec.reference docs/reference.md)"

# Short names for the shared constrained strings (their wording is in base.PATTERN_DESCRIPTIONS).
_PATTERN_NAMES = {
    base.NAME_PATTERN: "name",
    base.FIELD_PATTERN: "column name",
    base.DURATION_PATTERN: "duration",
    base.CPU_PATTERN: "cpu quantity",
    base.MEMORY_PATTERN: "memory quantity",
    base.CRON_PATTERN: "cron",
    base.GATE_PATTERN: "comparison",
    base.SECRET_REF_PATTERN: "secret reference",
    base.KMS_REF_PATTERN: "key reference",
    base.REGION_PATTERN: "region",
    base.RESOURCE_REF_PATTERN: "Kind/name",
    base.POLICY_ID_PATTERN: "policy id",
}
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", datetime.date: "date", Any: "any"}


@dataclass(frozen=True)
class Row:
    """One field of a kind, flattened to its YAML path."""

    path: str
    type: str
    required: bool
    default: str
    description: str


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata.extend(more)
    return annotation, metadata


def _members(annotation: Any) -> list[Any]:
    bare, _ = _unwrap(annotation)
    if typing.get_origin(bare) in {typing.Union, types.UnionType}:
        return [m for m in typing.get_args(bare) if m is not type(None)]
    return [annotation]


def _constraints(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str) and pattern not in _PATTERN_NAMES:
            words.append(f"matching `{pattern}`")
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                words.append(f"{word} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            words.append(f"at least {item.min_length}")
    return f" ({', '.join(words)})" if words else ""


def type_text(annotation: Any, extra: list[Any] | None = None) -> str:
    """A short human name of a field's type, like ``list of name`` or ``"file" | "object_store"``.

    ``extra`` is constraint metadata pydantic took off the annotation (a field's own ``Field(ge=1)``).
    """
    members = _members(annotation)
    if len(members) > 1:
        return " or ".join(dict.fromkeys(type_text(m) for m in members)) + _constraints(extra or [])
    bare, metadata = _unwrap(members[0])
    metadata = [*metadata, *(extra or [])]
    pattern = next((m.pattern for m in metadata if isinstance(getattr(m, "pattern", None), str)), None)
    origin = typing.get_origin(bare)
    if pattern in _PATTERN_NAMES:
        text = _PATTERN_NAMES[pattern]
    elif origin is typing.Literal:
        text = " | ".join(f"`{json.dumps(v)}`" for v in typing.get_args(bare))
    elif origin is list:
        text = f"list of {type_text(typing.get_args(bare)[0])}"
    elif origin is dict:
        key, value = typing.get_args(bare)
        text = f"map of {type_text(key)} to {type_text(value)}"
    elif isinstance(bare, type) and issubclass(bare, BaseModel):
        text = "object"
    else:
        text = _SCALARS.get(bare, getattr(bare, "__name__", str(bare)))
    return text + _constraints(metadata)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return ""
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined or isinstance(value, BaseModel):
        return ""
    return f"`{json.dumps(value, default=str)}`"


def _nested(annotation: Any) -> dict[str, list[type[BaseModel]]]:
    """The models a field holds, by path suffix (``[]`` a list item, ``.<key>`` a map value); several for a union."""
    found: dict[str, list[type[BaseModel]]] = {}
    for member in _members(annotation):
        bare, _ = _unwrap(member)
        origin = typing.get_origin(bare)
        inner: dict[str, list[type[BaseModel]]] = {}
        if origin is list:
            inner = {f"[]{k}": v for k, v in _nested(typing.get_args(bare)[0]).items()}
        elif origin is dict:
            inner = {f".<key>{k}": v for k, v in _nested(typing.get_args(bare)[1]).items()}
        elif isinstance(bare, type) and issubclass(bare, BaseModel):
            inner = {"": [bare]}
        for suffix, models in inner.items():
            found.setdefault(suffix, []).extend(models)
    return found


def _variant(model: type[BaseModel]) -> str:
    """``type: file`` for a member of a tagged union, else the model's name."""
    for name, info in model.model_fields.items():
        bare, _ = _unwrap(info.annotation)
        if typing.get_origin(bare) is typing.Literal and len(typing.get_args(bare)) == 1 and info.is_required():
            return f"{info.alias or name}: {typing.get_args(bare)[0]}"
    return model.__name__


def _row(path: str, infos: list[FieldInfo], note: str) -> Row:
    info = infos[0]
    return Row(
        f"{path} ({note})" if note else path,
        " or ".join(dict.fromkeys(type_text(i.annotation, i.metadata) for i in infos)),
        info.is_required(),
        _default(info),
        " ".join((info.description or "").split()),
    )


def _children(annotation: Any, path: str, note: str) -> Iterator[Row]:
    for suffix, models in _nested(annotation).items():
        if len(models) == 1:
            yield from rows(models[0], path + suffix, note)
        else:
            yield from _union_rows(models, path + suffix, note)


def _union_rows(models: list[type[BaseModel]], prefix: str, note: str) -> Iterator[Row]:
    """Fields every member has once (with every member's type), then each member's own fields, noted."""
    fields = [{info.alias or name: info for name, info in model.model_fields.items()} for model in models]
    common = set.intersection(*(set(f) for f in fields))
    for key in fields[0]:
        if key in common:
            yield _row(f"{prefix}.{key}", [f[key] for f in fields], note)
            yield from _children(fields[0][key].annotation, f"{prefix}.{key}", note)
    for model, own in zip(models, fields, strict=True):
        variant = _variant(model)
        for key, info in own.items():
            if key not in common:
                yield _row(f"{prefix}.{key}", [info], variant)
                yield from _children(info.annotation, f"{prefix}.{key}", variant)


def rows(model: type[BaseModel], prefix: str = "", note: str = "") -> Iterator[Row]:
    """Every field under ``model``, depth first, in declaration order."""
    for name, info in model.model_fields.items():
        path = f"{prefix}.{info.alias or name}" if prefix else (info.alias or name)
        yield _row(path, [info], note)
        yield from _children(info.annotation, path, note)


def models_under(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    """``model`` and every model its fields hold, however deep."""
    seen = set() if seen is None else seen
    if model not in seen:
        seen.add(model)
        for info in model.model_fields.values():
            for children in _nested(info.annotation).values():
                for child in children:
                    models_under(child, seen)
    return seen


def missing_descriptions() -> list[str]:
    """``module.Model.field`` of every spec field that has no description, sorted."""
    models: set[type[BaseModel]] = set()
    for kind in ALL_KINDS.values():
        models_under(kind, models)
    return sorted(
        f"{model.__module__}.{model.__qualname__}.{name}"
        for model in models
        for name, info in model.model_fields.items()
        if not (info.description or "").strip()
    )


def _cell(text: str) -> str:
    """GitHub tables end a cell at any ``|``, even inside code: escape them all."""
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """The whole reference as Markdown: one table per kind."""
    lines = [
        "# Spec field reference",
        "",
        f"Generated from the models that validate specs: do not edit; regenerate with `{REGENERATE}`.",
        "Every kind has `apiVersion: mlspec/v1`, `kind`, `metadata` and (except a bare Project) `spec`.",
        "`[]` in a path is an item of a list, `<key>` a key of a map; a note in parentheses names the",
        "variant of a union the field belongs to. Editors show the same descriptions through the JSON Schema",
        "in `schema/`.",
        "",
    ]
    for kind, model in ALL_KINDS.items():
        lines += [f"## {kind}", "", " ".join((model.__doc__ or "").split()), ""]
        lines += ["| Field | Type | Required / default | Description |", "|---|---|---|---|"]
        for row in rows(model):
            need = "required" if row.required else (f"default {row.default}" if row.default else "optional")
            lines.append(f"| `{row.path}` | {_cell(row.type)} | {need} | {_cell(row.description)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    """Write the reference to the file named in ``argv`` (stdout without one)."""
    text = reference_markdown()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
