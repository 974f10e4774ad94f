"""JSON Schema for every kind, generated from the same models that validate.

One source of truth: the schema an editor (yaml-language-server) uses and the
validator mlspec runs cannot disagree on structure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from mlspec.spec.base import StrictModel
from mlspec.spec.registry import ALL_KINDS, RESOURCE_KINDS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://mlspec.dev/schemas/v1"


def kind_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind, self-contained."""
    model = ALL_KINDS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": DIALECT, "$id": f"{SCHEMA_ID}/{kind}.json", **schema}


def combined_schema(kinds: dict[str, type[StrictModel]] | None = None) -> dict[str, Any]:
    """One schema for any spec document, choosing the kind's schema by ``kind``."""
    kinds = kinds or ALL_KINDS
    keys, top = models_json_schema(
        [(model, "validation") for model in kinds.values()], by_alias=True, ref_template="#/$defs/{model}"
    )
    branches = []
    for kind, model in kinds.items():
        ref = keys[(model, "validation")]["$ref"]
        branches.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": {"$ref": ref}})
    return {
        "$schema": DIALECT,
        "$id": f"{SCHEMA_ID}/mlspec.json",
        "title": "mlspec spec document",
        "description": "Any mlspec/v1 document; the 'kind' field selects the schema.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"const": "mlspec/v1"},
            "kind": {"enum": list(kinds)},
        },
        "allOf": branches,
        "$defs": top.get("$defs", {}),
    }


def write_schemas(directory: Path) -> list[Path]:
    """Write one file per kind plus ``mlspec.schema.json``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in ALL_KINDS:
        path = directory / f"{kind}.schema.json"
        path.write_text(json.dumps(kind_schema(kind), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    path = directory / "mlspec.schema.json"
    path.write_text(
        json.dumps(combined_schema(RESOURCE_KINDS | ALL_KINDS), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    written.append(path)
    return written
