"""Entity: the business object features are keyed by (customer, card, merchant)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlspec.spec.base import FieldName, Metadata, StrictModel


class EntitySpec(StrictModel):
    """Join keys and their type."""

    join_keys: list[FieldName] = Field(min_length=1)
    value_type: Literal["int64", "string"] = "string"
    description: str | None = None


class Entity(StrictModel):
    """An entity that feature views are keyed by."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["Entity"]
    metadata: Metadata
    spec: EntitySpec
