"""The batch scoring pipeline's two steps: fetch-entity-features -> score, as plain functions the KFP components call.

*fetch-entity-features* reads the rows of the Deployment's ``batch.entities``
DataSource (their join keys; the source's timestamp column as event time when the
file has it, else now) and joins the FeatureService's features onto them point in
time with Feast (``mlspec.runtime.features.join_features``: the same join training
uses). Every entity row is kept, in the source's order: one the store does not know
gets null features.

*score* resolves the model version (alias or pinned) in MLflow, loads the ONNX
file with the model server's loader (sha256 checked against the registry, and
against state when the engine passes what it recorded; decrypted in memory when
sealed; the CUDA provider when ``runtime.device: gpu`` and present, else CPU, and
it says so), scores ``chunk_size`` rows at a time in the model's input order, and
writes every entity row once: its keys, ``event_timestamp``, ``score`` (and
``class_index`` for a multiclass model), ``model_name``, ``model_version``,
``scored_at`` (one per run) and ``run_id``. A row whose features are all missing
(the entity is not in the feature store) gets a null score and is counted in
``missing_features``; a row missing only some is scored with the training's
imputation (the exported model replaces a NaN input with the training mean) and
counted in ``imputed_rows``.

Sinks: ``path`` is a parquet dataset under the environment's data folder, one
``run=<UTC stamp>/part-*.parquet`` folder per run, written under a hidden name and
renamed when complete, so a crash never leaves part of a run visible; ``table`` is
a PostgreSQL table written in one transaction (created when missing, the run's rows
replaced by COPY). The run's summary (rows, chunks, seconds, model version, sink,
device...) is the step's output and is appended to ``<data_dir>/batch/<deployment>/runs.jsonl``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.atomic import atomic_write
from mlspec.failpoints import failpoint
from mlspec.runtime.batch_sinks import BatchError, ParquetSink, TableSink, open_sink
from mlspec.runtime.context import RuntimeContext

__all__ = [
    "ERROR_PREFIX",
    "BatchError",
    "batch_folder",
    "fetch_entity_features",
    "read_runs",
    "score",
    "sink_label",
    "spec_digest",
]

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

RUNS_FILE = "runs.jsonl"
SCORE = "score"
CLASS_INDEX = "class_index"
META_COLUMNS = ("model_name", "model_version", "scored_at", "run_id")
ERROR_PREFIX = "mlspec batch error: "  # how a step reports a BatchError to the engine (a line, no traceback)


# --------------------------------------------------------------------------- shared with the engine


def batch_folder(data_dir: str | Path, deployment: str) -> Path:
    """Where a Deployment's run log lives: ``<data_dir>/batch/<deployment>``."""
    return Path(data_dir) / "batch" / deployment


def read_runs(data_dir: str | Path, deployment: str) -> list[dict[str, Any]]:
    """Every run summary recorded for a Deployment, oldest first ([] before the first run)."""
    path = batch_folder(data_dir, deployment) / RUNS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    runs = []
    for line in lines:
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue  # never happens with atomic rewrites; a hand-edited line is skipped, not fatal
    return runs


def spec_digest(deployment_json: str, feature_service: str) -> str:
    """What a run was configured with (the Deployment as the pipeline carries it, and the feature service)."""
    return hashlib.sha256(f"{deployment_json}\n{feature_service}".encode()).hexdigest()


def sink_label(batch: dict[str, Any]) -> str:
    """The sink in words, without secrets: ``parquet <path>`` or ``table <name>``."""
    sink = batch["sink"]
    return f"table {sink['table']}" if sink.get("table") else f"parquet {sink['path']}"


# --------------------------------------------------------------------------- step 1: fetch-entity-features


def _context(environment_json: str) -> RuntimeContext:
    from mlspec.runtime.context import context_parameter as parse  # one parser (and error message) for every pipeline

    return parse(environment_json)


def fetch_entity_features(deployment_json: str, environment_json: str, feature_service: str, dataset_path: str) -> int:
    """Join the feature service onto every row of the entity source (point in time); writes parquet to
    ``dataset_path`` (sealed when the environment has a key); returns the row count."""
    ctx = _context(environment_json)  # before importing Feast: a bad context fails fast
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlspec.runtime.dataset import FEATURES_KEY, ROW_ID, TIMESTAMP
    from mlspec.runtime.features import join_features, open_store, service_views, source_path, utc

    spec = json.loads(deployment_json)
    name, batch = spec["metadata"]["name"], spec["spec"]["batch"]
    store = open_store(ctx)
    projections, views, join_keys = service_views(store, feature_service)
    path, timestamp_field = source_path(store, batch["entities"], ctx)
    if "://" not in path and not Path(path).is_file():
        raise BatchError(f"entity source '{batch['entities']}': {path} does not exist")
    entities = pd.read_parquet(path)
    absent = [key for key in join_keys if key not in entities.columns]
    if absent:
        raise BatchError(
            f"entity source '{batch['entities']}' ({path}) lacks the join key(s) {absent} of feature service "
            f"'{feature_service}'; it has {list(entities.columns)}"
        )
    nulls = int(entities[join_keys].isna().any(axis=1).sum())
    if nulls:
        raise BatchError(
            f"entity source '{batch['entities']}' has {nulls} row(s) with a null join key ({', '.join(join_keys)}); "
            "an entity without a key cannot be scored"
        )
    frame = entities[join_keys].reset_index(drop=True)
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    if timestamp_field in entities.columns:  # features as of each row's time (nulls: as of now)
        frame[TIMESTAMP] = utc(entities[timestamp_field].reset_index(drop=True)).fillna(now)
    else:  # a plain list of keys: the latest features
        frame[TIMESTAMP] = utc(pd.Series([now] * len(frame), dtype=object))
    frame[ROW_ID] = range(len(frame))
    joined, columns = join_features(store, projections, views, frame, strict=False)  # every entity row stays
    if len(set(columns)) != len(columns):
        raise BatchError(f"feature service '{feature_service}' selects a feature name twice: {columns}")
    joined = joined[[ROW_ID, *join_keys, TIMESTAMP, *columns]]
    table = pa.Table.from_pandas(joined, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), FEATURES_KEY: json.dumps(columns).encode()}
    Path(dataset_path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), dataset_path)
    ctx.seal(dataset_path, f"batch/{name}/fetch-entity-features/dataset")  # features of real customers
    return len(joined)


# --------------------------------------------------------------------------- step 2: score


def _threads(cpu: Any) -> int:
    text = str(cpu)
    cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, min(os.cpu_count() or 1, math.ceil(cores)))


def _resolve_model(ctx: RuntimeContext, model: dict[str, Any], expected: dict[str, str]) -> Any:
    from mlspec.runtime.model_registry import Registry

    registry = Registry(ctx.tracking_uri)
    if model.get("version"):
        found = registry.version(model["name"], version=model["version"])
        what = f"version {model['version']}"
    else:
        found = registry.version(model["name"], alias=model.get("alias") or "champion")
        what = f"alias '{model.get('alias') or 'champion'}'"
    if found is None:
        raise BatchError(f"model '{model['name']}' has no {what} in the registry; train it first")
    if not found.sha256:
        raise BatchError(f"{found.name} v{found.version} has no onnx_sha256 tag in the registry; refusing to score")
    recorded = expected.get(found.version)
    if recorded and recorded != found.sha256:
        raise BatchError(
            f"{found.name} v{found.version}: the registry's sha256 {found.sha256[:12]}… is not the "
            f"{recorded[:12]}… state recorded when it was trained; refusing to score"
        )
    return found


def _load(ctx: RuntimeContext, name: str, version: Any, runtime: dict[str, Any]) -> Any:
    from mlspec.crypto.keys import ROOT_VARIABLE
    from mlspec.serving.config import VariantConfig
    from mlspec.serving.models import ModelError, load_model

    os.environ[ROOT_VARIABLE] = ctx.project_root  # where the file:// key of a sealed model resolves
    variant = VariantConfig(name, version.aliases[0] if version.aliases else "", version.version,
                            version.onnx_path, version.sha256)  # fmt: skip
    try:
        return load_model(
            variant, len(version.features), runtime.get("device", "cpu"), runtime.get("fallback", "cpu"),
            threads=_threads(runtime.get("cpu", 1)),
        )  # fmt: skip
    except ModelError as exc:
        raise BatchError(str(exc)) from None


def _columns(
    part: pd.DataFrame, keys: list[str], scores: Any, classes: Any, meta: dict[str, Any]
) -> dict[str, pa.Array]:
    import numpy as np
    import pyarrow as pa

    from mlspec.runtime.dataset import TIMESTAMP

    rows = len(part)
    arrays: dict[str, pa.Array] = {key: pa.array(part[key].to_numpy()) for key in keys}
    arrays[TIMESTAMP] = pa.array(part[TIMESTAMP]).cast(pa.timestamp("us", tz="UTC"))
    arrays[SCORE] = pa.array(scores, type=pa.float32(), mask=np.isnan(scores))
    if classes is not None:
        arrays[CLASS_INDEX] = pa.array(classes, type=pa.int32(), mask=classes < 0)
    arrays["model_name"] = pa.array([meta["model_name"]] * rows, type=pa.string())
    arrays["model_version"] = pa.array([meta["model_version"]] * rows, type=pa.string())
    arrays["scored_at"] = pa.array([meta["scored_at"]] * rows, type=pa.timestamp("us", tz="UTC"))
    arrays["run_id"] = pa.array([meta["run_id"]] * rows, type=pa.string())
    return arrays


def _record(ctx: RuntimeContext, deployment: str, summary: dict[str, Any]) -> None:
    """Append the summary to the run log (rewritten atomically: readers see the old log or the new one)."""
    path = batch_folder(ctx.data_dir, deployment) / RUNS_FILE
    try:
        before = path.read_bytes()
    except FileNotFoundError:
        before = b""
    if before and not before.endswith(b"\n"):
        before += b"\n"
    atomic_write(path, before + (json.dumps(summary, sort_keys=True) + "\n").encode())


def read_fetched(
    ctx: RuntimeContext, dataset_path: str, version: Any, feature_service: str
) -> tuple[pd.DataFrame, list[str]]:
    """The fetched rows in the entity source's order and their entity key columns; BatchError when they lack a
    feature the model takes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlspec.crypto import CryptoError
    from mlspec.runtime.dataset import FEATURES_KEY, ROW_ID, TIMESTAMP

    try:
        table = pq.read_table(pa.BufferReader(ctx.read(dataset_path)))
    except CryptoError as exc:
        raise BatchError(f"cannot read the fetched features: {exc}") from None
    provided: list[str] = json.loads((table.schema.metadata or {})[FEATURES_KEY])
    lacking = [f for f in version.features if f not in provided]
    if lacking:
        raise BatchError(
            f"{version.name} v{version.version} takes {lacking}, which feature service '{feature_service}' does not "
            f"provide ({provided}); point spec.features at the model's feature service"
        )
    frame = table.to_pandas().sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    keys = [c for c in frame.columns if c not in (ROW_ID, TIMESTAMP, *provided)]
    return frame, keys


def is_multiclass(model: Any) -> bool:
    """True when the model answers one probability per class (so each row gets a class index too)."""
    output = next(o for o in model.session.get_outputs() if o.name == model.output_name)
    return len(output.shape) == 2 and output.shape[1] != 1


@dataclass
class ChunkScores:
    """One chunk's scores (NaN: the row's features are all missing), class indexes (-1: none) and counts."""

    scores: Any  # np.ndarray[float32]
    classes: Any  # np.ndarray[int32] | None
    missing: int
    imputed: int


def score_chunk(part: pd.DataFrame, features: list[str], model: Any, multiclass: bool) -> ChunkScores:
    """Score the rows of ``part`` that have any feature; a row with some missing is imputed by the model."""
    import numpy as np
    import pandas as pd

    numbers = part[features].apply(pd.to_numeric, errors="coerce")
    x = numbers.to_numpy(dtype=np.float32, na_value=np.nan)
    absent = np.isnan(x).all(axis=1) if features else np.zeros(len(x), dtype=bool)
    scores = np.full(len(part), np.nan, dtype=np.float32)
    classes = np.full(len(part), -1, dtype=np.int32) if multiclass else None
    if (~absent).any():
        out = np.asarray(model.run(np.ascontiguousarray(x[~absent])))
        if classes is not None:  # class probabilities: the most likely class and its probability
            classes[~absent] = out.argmax(axis=1)
            scores[~absent] = out.max(axis=1)
        else:
            scores[~absent] = out.reshape(-1)
    imputed = int((np.isnan(x).any(axis=1) & ~absent).sum())
    return ChunkScores(scores, classes, int(absent.sum()), imputed)


@dataclass
class Written:
    """What a run wrote: where, in how many chunks, and how many rows lacked features."""

    location: str = ""
    chunks: int = 0
    missing: int = 0
    imputed: int = 0


def write_scores(  # noqa: PLR0917
    ctx: RuntimeContext,
    frame: pd.DataFrame,
    keys: list[str],
    features: list[str],
    model: Any,
    batch: dict[str, Any],
    meta: dict[str, Any],
) -> Written:
    """Score ``frame`` ``chunk_size`` rows at a time into the sink; the run appears whole or not at all."""
    import pyarrow as pa

    multiclass = is_multiclass(model)
    chunk_size = int(batch.get("chunk_size", 10_000))
    written = Written()
    sink: ParquetSink | TableSink | None = None
    try:
        for start in range(0, max(len(frame), 1), chunk_size):
            part = frame.iloc[start : start + chunk_size]
            scored = score_chunk(part, features, model, multiclass)
            written.missing += scored.missing
            written.imputed += scored.imputed
            chunk = pa.table(_columns(part, keys, scored.scores, scored.classes, meta))
            if sink is None:
                sink = open_sink(ctx, batch["sink"], chunk.schema, meta["run_id"], meta["scored_at"])
            sink.write(chunk)
            written.chunks += 1
            failpoint("batch.after_chunk")
        assert sink is not None
        written.location = sink.commit()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return written


def score(  # noqa: PLR0917  (KFP components call steps positionally)
    deployment_json: str,
    environment_json: str,
    feature_service: str,
    dataset_path: str,
    run_id: str = "",
    expected_sha256_json: str = "{}",
) -> str:
    """Score the fetched rows in chunks and write them to the sink; returns the run summary as JSON.

    ``expected_sha256_json`` maps version -> ONNX sha256 as state recorded it (``{}``: the registry's tag only).
    """
    ctx = _context(environment_json)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    spec = json.loads(deployment_json)
    name, body = spec["metadata"]["name"], spec["spec"]
    batch = body["batch"]
    run_id = run_id.strip() or uuid.uuid4().hex
    version = _resolve_model(ctx, body["model"], json.loads(expected_sha256_json or "{}"))
    features = list(version.features)
    frame, keys = read_fetched(ctx, dataset_path, version, feature_service)
    model = _load(ctx, name, version, body.get("runtime", {}))
    device_info = model.device_info() if hasattr(model, "device_info") else {"device": model.device}
    scored_at = dt.datetime.now(dt.UTC)
    meta = {"model_name": version.name, "model_version": version.version, "scored_at": scored_at, "run_id": run_id}
    scoring_clock = time.perf_counter()
    written = write_scores(ctx, frame, keys, features, model, batch, meta)
    finished = dt.datetime.now(dt.UTC)
    scoring = time.perf_counter() - scoring_clock
    seconds = time.perf_counter() - clock
    summary: dict[str, Any] = {
        "deployment": name,
        "environment": ctx.environment,
        "run_id": run_id,
        "model": version.name,
        "model_version": version.version,
        "onnx_sha256": version.sha256,
        "features": features,
        "rows": len(frame),
        "scored": len(frame) - written.missing,
        "missing_features": written.missing,
        "imputed_rows": written.imputed,
        "chunks": written.chunks,
        "chunk_size": int(batch.get("chunk_size", 10_000)),
        "seconds": round(seconds, 3),  # the whole step: registry, model load, scoring, writing
        "scoring_seconds": round(scoring, 3),  # scoring and writing the chunks
        "rows_per_second": round(len(frame) / scoring, 1) if scoring > 0 else None,
        "started_at": started.isoformat(),
        "scored_at": scored_at.isoformat(),
        "finished_at": finished.isoformat(),
        "sink": sink_label(batch),
        "location": written.location,
        **{k: v for k, v in device_info.items() if k in ("device", "requested_device", "fallback_reason")},
        "spec_sha256": spec_digest(deployment_json, feature_service),
    }
    _record(ctx, name, summary)
    return json.dumps(summary, sort_keys=True)
