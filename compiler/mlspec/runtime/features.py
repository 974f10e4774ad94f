"""The fetch-features step: training rows from Feast point-in-time joins of the feature service with the labels.

The entity rows are the label source's rows (or ``entity_source``'s): its join keys,
its event timestamp and the label. Feast's file offline store drops entity rows that
repeat (join keys, timestamp) of a feature view (feast#6787): two labelled
transactions of one customer on one day with different merchants come back as one.
So each feature view is queried with the *distinct* (its join keys, timestamp) rows,
which Feast joins one to one, and the features are merged back onto every entity row
here, keyed by a row id; every count is checked, so no row is silently lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.dataset import FEATURES_KEY, LABEL_KEY, ROW_ID, TIMESTAMP


class FeatureJoinError(RuntimeError):
    """The point-in-time join did not give one row per entity row."""


def feast_name(name: str) -> str:
    """Feast object names are the spec names with '-' as '_'."""
    return name.replace("-", "_")


def open_store(ctx: RuntimeContext) -> FeatureStore:
    """The environment's Feast store; data paths resolve against the project root."""
    os.environ["MLSPEC_PROJECT_ROOT"] = ctx.project_root
    return FeatureStore(repo_path=ctx.feature_repo)


def source_path(store: FeatureStore, name: str, ctx: RuntimeContext) -> tuple[str, str]:
    """A file DataSource's parquet location and its timestamp column: an object-store URI (az://, read through
    fsspec) as it is, a relative path against the project root."""
    source = store.get_data_source(feast_name(name))
    location = str(getattr(source, "path", "") or "")
    if not location:
        raise ValueError(f"data source '{name}' is not a file source; the runtime reads parquet files")
    if "://" in location or Path(location).is_absolute():
        return location, source.timestamp_field
    return str(Path(ctx.project_root) / location), source.timestamp_field


def utc(series: pd.Series) -> pd.Series:
    """Timestamps as nanosecond UTC (what Feast returns), whatever unit or zone they were stored with."""
    return pd.to_datetime(series, utc=True).astype("datetime64[ns, UTC]")


def service_views(store: FeatureStore, service_name: str) -> tuple[list[Any], dict[str, Any], list[str]]:
    """A feature service's projections, their feature views by name, and the join keys of them all (sorted)."""
    service = store.get_feature_service(feast_name(service_name))
    projections = service.feature_view_projections
    views = {p.name: store.get_feature_view(p.name) for p in projections}
    join_keys = sorted({key for view in views.values() for key in view.join_keys})
    return projections, views, join_keys


def join_features(
    store: FeatureStore,
    projections: list[Any],
    views: dict[str, Any],
    entities: pd.DataFrame,
    *,
    strict: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Point-in-time join of every projection onto ``entities`` (join keys, TIMESTAMP, ROW_ID 0..n-1, in order).

    Each view is queried with the distinct (its keys, timestamp) rows, which Feast joins one to one (feast#6787),
    and merged back onto every entity row; an entity the store does not know gets nulls. Returns the entity rows
    in their order with the features appended, and the feature columns in service order. Raises
    :class:`FeatureJoinError` when any count is off. Feast's file store also leaves out a row whose key it knows
    but has no value for inside the view's TTL; ``strict=False`` (scoring) takes such a row as having no value
    there (nulls, like an unknown key), where training (strict) refuses the join.
    """
    columns: list[str] = []
    frame = entities
    for projection in projections:
        view = views[projection.name]
        keys = list(view.join_keys)
        names = [f.name for f in projection.features]
        distinct = entities[[*keys, TIMESTAMP]].drop_duplicates().reset_index(drop=True)
        joined = store.get_historical_features(
            entity_df=distinct, features=[f"{projection.name_alias or projection.name}:{n}" for n in names]
        ).to_df()
        if len(joined) > len(distinct) or (strict and len(joined) != len(distinct)):
            raise FeatureJoinError(
                f"Feast returned {len(joined)} rows for {len(distinct)} distinct (keys, timestamp) rows "
                f"of feature view '{projection.name}' (feast#6787); refusing to use a partial join"
            )
        joined[TIMESTAMP] = utc(joined[TIMESTAMP])
        if len(distinct.merge(joined[[*keys, TIMESTAMP]], on=[*keys, TIMESTAMP], how="inner")) != len(joined):
            raise FeatureJoinError(f"Feast returned rows of feature view '{projection.name}' that match no entity row")
        frame = frame.merge(joined[[*keys, TIMESTAMP, *names]], on=[*keys, TIMESTAMP], how="left", validate="m:1")
        columns.extend(names)
    if len(frame) != len(entities) or frame[ROW_ID].tolist() != list(range(len(entities))):
        raise FeatureJoinError(f"the join gave {len(frame)} rows for {len(entities)} entity rows")
    return frame, columns


def fetch(spec: dict[str, Any], ctx: RuntimeContext, out_path: str) -> int:
    """Write the training rows (features in service order, label, timestamp) to ``out_path``; returns the count."""
    body = spec["spec"]
    label = body["label"]
    store = open_store(ctx)
    projections, views, join_keys = service_views(store, body["features"])
    entity_name = body.get("entity_source") or label["source"]
    entity_path, entity_ts = source_path(store, entity_name, ctx)

    entities = pd.read_parquet(entity_path)
    if entity_name != label["source"]:
        # labels come from their own source: attach them point in time (the latest label at or before each row)
        label_path, label_ts = source_path(store, label["source"], ctx)
        labels = pd.read_parquet(label_path)
        ts = label.get("timestamp_field") or label_ts
        keys = [k for k in join_keys if k in labels.columns]
        labels = labels[[*keys, ts, label["field"]]].rename(columns={ts: TIMESTAMP})
        labels[TIMESTAMP] = utc(labels[TIMESTAMP])
        entities = entities.rename(columns={entity_ts: TIMESTAMP})
        entities[TIMESTAMP] = utc(entities[TIMESTAMP])
        entities = pd.merge_asof(
            entities.sort_values(TIMESTAMP), labels.sort_values(TIMESTAMP), on=TIMESTAMP, by=keys or None
        )
    else:
        ts = label.get("timestamp_field") or entity_ts
        entities = entities.rename(columns={ts: TIMESTAMP})
    missing = [c for c in [*join_keys, TIMESTAMP, label["field"]] if c not in entities.columns]
    if missing:
        raise ValueError(f"entity source '{entity_name}' lacks the columns {missing} the feature service joins on")
    entities = entities[[*join_keys, TIMESTAMP, label["field"]]].dropna(subset=[label["field"]])
    entities[TIMESTAMP] = utc(entities[TIMESTAMP])
    entities = entities.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    entities[ROW_ID] = range(len(entities))

    frame, columns = join_features(store, projections, views, entities)
    if len(set(columns)) != len(columns):
        raise ValueError(f"feature service '{body['features']}' selects a feature name twice: {columns}")
    frame = frame[[ROW_ID, *join_keys, TIMESTAMP, *columns, label["field"]]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {
        **(table.schema.metadata or {}),
        FEATURES_KEY: json.dumps(columns).encode(),
        LABEL_KEY: label["field"].encode(),
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), out_path)
    return len(frame)
