"""DataSource: where raw data lives, how it is classified, where and how it is stored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from mlspec.spec.base import (
    Classification,
    DType,
    Encryption,
    FieldError,
    FieldName,
    Metadata,
    Region,
    SecretRef,
    StrictModel,
)
from mlspec.spec.suggest import did_you_mean


class SchemaField(StrictModel):
    """One column of a source, with its type."""

    name: FieldName
    """Column name as it is in the data."""
    dtype: DType
    """Column type; unix_timestamp for event times."""
    description: str | None = None
    """What the column holds, for people reading the spec."""


class _SourceCommon(StrictModel):
    timestamp_field: FieldName = Field(description="Event-time column used for point-in-time joins.")
    created_timestamp_field: FieldName | None = None
    """Column with the time a row was written; breaks ties between rows of the same event time."""
    region: Region = Field(description="Where the data physically lives, e.g. uae-north.")
    classification: Classification
    """Sensitivity of the data: public, internal, confidential or pii; policies decide where each may go."""
    encryption: Encryption = Field(default_factory=Encryption)
    """Encryption of the data at rest."""
    schema_: list[SchemaField] = Field(default_factory=list, alias="schema")
    """The columns the data has; when declared, every column a spec reads from this source must be in it."""
    retention: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(d|w)$")] | None = None
    """How long rows are kept, e.g. 365d."""

    def column_names(self) -> list[str]:
        """The declared columns' names (empty when the source declares no schema)."""
        return [column.name for column in self.schema_]

    @model_validator(mode="after")
    def _columns_consistent(self) -> _SourceCommon:
        seen: dict[str, int] = {}
        for index, column in enumerate(self.schema_):
            if column.name in seen:
                raise FieldError(
                    ("schema", index, "name"),
                    f"column '{column.name}' is declared twice (first at schema[{seen[column.name]}]); "
                    "remove or rename one",
                )
            seen[column.name] = index
        if seen:
            for field in ("timestamp_field", "created_timestamp_field"):
                value = getattr(self, field)
                if value is not None and value not in seen:
                    guess = did_you_mean(value, seen)
                    fix = f"did you mean '{guess}'?" if guess else "add it to the schema"
                    raise FieldError(field, f"column '{value}' is not in the source's schema; {fix}")
        return self


class FileSource(_SourceCommon):
    """A file on local disk or a mounted volume (parquet or csv)."""

    type: Literal["file"]
    """Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."""
    path: Annotated[str, StringConstraints(min_length=1)]
    """The file, relative to the project root (like data/transactions.parquet) or absolute."""
    format: Literal["parquet", "csv"] = "parquet"
    """File format."""


class ObjectStoreSource(_SourceCommon):
    """Files in an object store (S3-compatible, Azure Blob, GCS)."""

    type: Literal["object_store"]
    """Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."""
    uri: Annotated[str, StringConstraints(pattern=r"^(s3|gs|az|abfss)://\S+$")]
    """Object URI, like s3://bucket/path/data.parquet."""
    format: Literal["parquet", "csv"] = "parquet"
    """File format."""
    credentials: SecretRef | None = None
    """Reference to the credentials (never the credentials themselves)."""


class PostgresSource(_SourceCommon):
    """A PostgreSQL table or query; the connection string is a secret reference."""

    type: Literal["postgres"]
    """Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."""
    connection: SecretRef
    """Reference to the connection string, like secret://payments/db."""
    table: str | None = None
    """Table to read, like analytics.transactions."""
    query: str | None = None
    """SQL query to read instead of a table."""


class KafkaSource(_SourceCommon):
    """A Kafka topic for streaming features, with a batch source for history."""

    type: Literal["kafka"]
    """Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."""
    bootstrap_servers: Annotated[str, StringConstraints(min_length=1)]
    """Comma-separated host:port list of Kafka brokers."""
    topic: Annotated[str, StringConstraints(min_length=1)]
    """Topic the events are read from."""
    credentials: SecretRef | None = None
    """Reference to the credentials (never the credentials themselves)."""
    batch_source: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        default=None, description="Name of a DataSource with the topic's history."
    )


DataSourceSpec = Annotated[FileSource | ObjectStoreSource | PostgresSource | KafkaSource, Field(discriminator="type")]


class DataSource(StrictModel):
    """A source of raw data."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    """Always mlspec/v1."""
    kind: Literal["DataSource"]
    """Always DataSource."""
    metadata: Metadata
    """Name, owner, description and labels."""
    spec: DataSourceSpec
    """The source; 'type' selects file, object_store, postgres or kafka."""
