"""DataSource: where raw data lives, how it is classified, where and how it is stored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mlspec.spec.base import (
    Classification,
    DType,
    Encryption,
    FieldName,
    Metadata,
    Region,
    SecretRef,
    StrictModel,
)


class SchemaField(StrictModel):
    """One column of a source, with its type."""

    name: FieldName
    dtype: DType
    description: str | None = None


class _SourceCommon(StrictModel):
    timestamp_field: FieldName = Field(description="Event-time column used for point-in-time joins.")
    created_timestamp_field: FieldName | None = None
    region: Region = Field(description="Where the data physically lives, e.g. uae-north.")
    classification: Classification
    encryption: Encryption = Field(default_factory=Encryption)
    schema_: list[SchemaField] = Field(default_factory=list, alias="schema")
    retention: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(d|w)$")] | None = None


class FileSource(_SourceCommon):
    """A file on local disk or a mounted volume (parquet or csv)."""

    type: Literal["file"]
    path: Annotated[str, StringConstraints(min_length=1)]
    format: Literal["parquet", "csv"] = "parquet"


class ObjectStoreSource(_SourceCommon):
    """Files in an object store (S3-compatible, Azure Blob, GCS)."""

    type: Literal["object_store"]
    uri: Annotated[str, StringConstraints(pattern=r"^(s3|gs|az|abfss)://\S+$")]
    format: Literal["parquet", "csv"] = "parquet"
    credentials: SecretRef | None = None


class PostgresSource(_SourceCommon):
    """A PostgreSQL table or query; the connection string is a secret reference."""

    type: Literal["postgres"]
    connection: SecretRef
    table: str | None = None
    query: str | None = None


class KafkaSource(_SourceCommon):
    """A Kafka topic for streaming features, with a batch source for history."""

    type: Literal["kafka"]
    bootstrap_servers: Annotated[str, StringConstraints(min_length=1)]
    topic: Annotated[str, StringConstraints(min_length=1)]
    credentials: SecretRef | None = None
    batch_source: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        default=None, description="Name of a DataSource with the topic's history."
    )


DataSourceSpec = Annotated[FileSource | ObjectStoreSource | PostgresSource | KafkaSource, Field(discriminator="type")]


class DataSource(StrictModel):
    """A source of raw data."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["DataSource"]
    metadata: Metadata
    spec: DataSourceSpec
