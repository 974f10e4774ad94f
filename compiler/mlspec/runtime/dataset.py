"""The training dataset file passed between steps: parquet sorted by time, with the feature order in its metadata."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TIMESTAMP = "event_timestamp"  # the dataset's timestamp column (Feast's name for the entity event time)
ROW_ID = "__row_id"
FEATURES_KEY = b"mlspec.features"  # parquet metadata: the feature service's columns, in order (the ONNX input order)
LABEL_KEY = b"mlspec.label"

if TYPE_CHECKING:
    from mlspec.runtime.context import RuntimeContext


def read_dataset(path: str, ctx: RuntimeContext | None = None) -> tuple[pd.DataFrame, list[str], str]:
    """The dataset written by the fetch-features step: rows sorted by time, the feature order, the label column.

    With ``ctx``, a dataset sealed by an environment with a key is decrypted in memory (it never lands in clear)."""
    table = pq.read_table(pa.BufferReader(ctx.read(path))) if ctx is not None else pq.read_table(path)
    metadata = table.schema.metadata or {}
    features: list[str] = json.loads(metadata[FEATURES_KEY])
    return table.to_pandas(), features, metadata[LABEL_KEY].decode()
