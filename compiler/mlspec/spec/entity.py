"""Entity: the business object features are keyed by (customer, card, merchant)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlspec.spec.base import FieldError, FieldName, Metadata, StrictModel


class EntitySpec(StrictModel):
    """Join keys and their type."""

    join_keys: list[FieldName] = Field(
        min_length=1,
        description="Key columns that identify one entity (like customer_id); sources keyed by it must have them.",
    )
    value_type: Literal["int64", "string"] = Field(default="string", description="Type of the key values.")
    description: str | None = Field(default=None, description="What the entity is, for people reading the spec.")

    @model_validator(mode="after")
    def _unique_keys(self) -> EntitySpec:
        for index, key in enumerate(self.join_keys):
            if key in self.join_keys[:index]:
                raise FieldError(("join_keys", index), f"join key '{key}' is listed twice")
        return self


class Entity(StrictModel):
    """An entity that feature views are keyed by."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["Entity"] = Field(description="Always Entity.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: EntitySpec = Field(description="Join keys and their type.")
