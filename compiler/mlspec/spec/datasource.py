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

    name: FieldName = Field(description="Column name as it is in the data.")
    dtype: DType = Field(description="Column type; unix_timestamp for event times.")
    description: str | None = Field(default=None, description="What the column holds, for people reading the spec.")


class _SourceCommon(StrictModel):
    timestamp_field: FieldName = Field(description="Event-time column used for point-in-time joins.")
    created_timestamp_field: FieldName | None = Field(
        default=None,
        description="Column with the time a row was written; breaks ties between rows of the same event time.",
    )
    region: Region = Field(description="Where the data physically lives, e.g. uae-north.")
    classification: Classification = Field(
        description=(
            "Sensitivity of the data: public, internal, confidential or pii; policies decide where each may go."
        )
    )
    encryption: Encryption = Field(default_factory=Encryption, description="Encryption of the data at rest.")
    schema_: list[SchemaField] = Field(
        default_factory=list,
        alias="schema",
        description=(
            "The columns the data has; when declared, every column a spec reads from this source must be in it."
        ),
    )
    retention: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(d|w)$")] | None = Field(
        default=None, description="How long rows are kept, e.g. 365d."
    )

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

    type: Literal["file"] = Field(
        description="Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."
    )
    path: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="The file, relative to the project root (like data/transactions.parquet) or absolute."
    )
    format: Literal["parquet", "csv"] = Field(default="parquet", description="File format.")


class ObjectStoreSource(_SourceCommon):
    """Files in an object store (S3-compatible, Azure Blob, GCS)."""

    type: Literal["object_store"] = Field(
        description="Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."
    )
    uri: Annotated[str, StringConstraints(pattern=r"^(s3|gs|az|abfss)://\S+$")] = Field(
        description="Object URI, like s3://bucket/path/data.parquet."
    )
    format: Literal["parquet", "csv"] = Field(default="parquet", description="File format.")
    credentials: SecretRef | None = Field(
        default=None, description="Reference to the credentials (never the credentials themselves)."
    )


class PostgresSource(_SourceCommon):
    """A PostgreSQL table or query; the connection string is a secret reference."""

    type: Literal["postgres"] = Field(
        description="Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."
    )
    connection: SecretRef = Field(description="Reference to the connection string, like secret://payments/db.")
    table: str | None = Field(default=None, description="Table to read, like analytics.transactions.")
    query: str | None = Field(default=None, description="SQL query to read instead of a table.")


class KafkaSource(_SourceCommon):
    """A Kafka topic for streaming features, with a batch source for history."""

    type: Literal["kafka"] = Field(
        description="Which kind of source: file, object_store, postgres or kafka (selects the fields that follow)."
    )
    bootstrap_servers: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Comma-separated host:port list of Kafka brokers."
    )
    topic: Annotated[str, StringConstraints(min_length=1)] = Field(description="Topic the events are read from.")
    credentials: SecretRef | None = Field(
        default=None, description="Reference to the credentials (never the credentials themselves)."
    )
    batch_source: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        default=None, description="Name of a DataSource with the topic's history."
    )


DataSourceSpec = Annotated[FileSource | ObjectStoreSource | PostgresSource | KafkaSource, Field(discriminator="type")]


class DataSource(StrictModel):
    """A source of raw data."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["DataSource"] = Field(description="Always DataSource.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: DataSourceSpec = Field(description="The source; 'type' selects file, object_store, postgres or kafka.")
