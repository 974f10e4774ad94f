"""FeatureView and FeatureService: features computed from sources, and the sets models use."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlspec.spec.base import DType, Duration, FieldError, FieldName, Metadata, Name, StrictModel


class Feature(StrictModel):
    """One feature column."""

    name: FieldName = Field(
        description="Feature name: a column of the view's source (declared in its schema, when it has one)."
    )
    dtype: DType = Field(description="Value type of the feature.")
    description: str | None = Field(default=None, description="What the feature measures, for people reading the spec.")


class FeatureViewSpec(StrictModel):
    """Features of one or more entities, read from one source."""

    entities: list[Name] = Field(
        min_length=1, description="Entities the features are keyed by; their join keys must be columns of the source."
    )
    source: Name = Field(description="DataSource the features are read from.")
    ttl: Duration = Field(description="How long a feature value stays valid, e.g. 7d.")
    online: bool = Field(
        default=True, description="Also serve the latest values from the online store (for real-time inference)."
    )
    features: list[Feature] = Field(min_length=1, description="The feature columns.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free-form tags passed to the feature store.")

    @model_validator(mode="after")
    def _unique_features(self) -> FeatureViewSpec:
        for index, entity in enumerate(self.entities):
            if entity in self.entities[:index]:
                raise FieldError(("entities", index), f"entity '{entity}' is listed twice")
        seen: set[str] = set()
        for index, feature in enumerate(self.features):
            if feature.name in seen:
                raise FieldError(("features", index, "name"), f"feature {feature.name!r} is declared twice")
            seen.add(feature.name)
        return self


class FeatureView(StrictModel):
    """A group of features served together."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["FeatureView"] = Field(description="Always FeatureView.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: FeatureViewSpec = Field(description="Entities, source and features.")


class FeatureSelection(StrictModel):
    """Features taken from one view: all of them, or the named ones."""

    view: Name = Field(description="A FeatureView.")
    fields: list[FieldName] | None = Field(default=None, description="Omit to take every feature of the view.")


class FeatureServiceSpec(StrictModel):
    """The features one model consumes."""

    features: list[FeatureSelection] = Field(
        min_length=1,
        description="The views and features, in the order the model sees them; a feature name may appear only once.",
    )

    @model_validator(mode="after")
    def _no_duplicates(self) -> FeatureServiceSpec:
        views: dict[str, int] = {}
        for index, selection in enumerate(self.features):
            if selection.view in views:
                raise FieldError(
                    ("features", index, "view"),
                    f"view '{selection.view}' is selected twice (first at features[{views[selection.view]}]); "
                    "list its fields in one selection",
                )
            views[selection.view] = index
            fields = selection.fields or []
            for position, field in enumerate(fields):
                if field in fields[:position]:
                    raise FieldError(("features", index, "fields", position), f"feature '{field}' is selected twice")
        return self


class FeatureService(StrictModel):
    """A named set of features that a training pipeline and its deployment share."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["FeatureService"] = Field(description="Always FeatureService.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: FeatureServiceSpec = Field(description="The features selected.")
