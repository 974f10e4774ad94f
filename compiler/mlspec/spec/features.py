"""FeatureView and FeatureService: features computed from sources, and the sets models use."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlspec.spec.base import DType, Duration, FieldError, FieldName, Metadata, Name, StrictModel


class Feature(StrictModel):
    """One feature column."""

    name: FieldName
    dtype: DType
    description: str | None = None


class FeatureViewSpec(StrictModel):
    """Features of one or more entities, read from one source."""

    entities: list[Name] = Field(min_length=1)
    source: Name
    ttl: Duration = Field(description="How long a feature value stays valid, e.g. 7d.")
    online: bool = True
    features: list[Feature] = Field(min_length=1)
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_features(self) -> FeatureViewSpec:
        seen: set[str] = set()
        for index, feature in enumerate(self.features):
            if feature.name in seen:
                raise FieldError(("features", index, "name"), f"feature {feature.name!r} is declared twice")
            seen.add(feature.name)
        return self


class FeatureView(StrictModel):
    """A group of features served together."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["FeatureView"]
    metadata: Metadata
    spec: FeatureViewSpec


class FeatureSelection(StrictModel):
    """Features taken from one view: all of them, or the named ones."""

    view: Name
    fields: list[FieldName] | None = Field(default=None, description="Omit to take every feature of the view.")


class FeatureServiceSpec(StrictModel):
    """The features one model consumes."""

    features: list[FeatureSelection] = Field(min_length=1)


class FeatureService(StrictModel):
    """A named set of features that a training pipeline and its deployment share."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["FeatureService"]
    metadata: Metadata
    spec: FeatureServiceSpec
