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

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.atomic import atomic_write
from mlspec.failpoints import failpoint
from mlspec.runtime.context import RuntimeContext, resolve_reference

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

RUNS_FILE = "runs.jsonl"
SCORE = "score"
CLASS_INDEX = "class_index"
META_COLUMNS = ("model_name", "model_version", "scored_at", "run_id")
PART = "part-{:05d}.parquet"
ERROR_PREFIX = "mlspec batch error: "  # how a step reports a BatchError to the engine (a line, no traceback)


class BatchError(RuntimeError):
    """A batch run cannot go on: the entity source, the model or the sink is not what the run needs."""


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
    from mlspec.runtime.steps import _context as parse  # one parser (and error message) for every pipeline

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
    if "://" not in str(path) and not path.is_file():
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
    from mlspec.targets.local.registry import Registry

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


class ParquetSink:
    """One run as ``<root>/run=<stamp>/part-*.parquet``: written under a hidden name, renamed when complete."""

    def __init__(self, root: Path, stamp: str) -> None:
        self.root = root
        self.final = root / f"run={stamp}"
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".run=*.tmp"):  # a crashed run's parts: never visible, removed now
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = root / f".run={stamp}.{uuid.uuid4().hex[:8]}.tmp"
        self.tmp.mkdir()
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        """Write one chunk as the next part file (flushed to disk)."""
        import pyarrow.parquet as pq

        path = self.tmp / PART.format(self.parts)
        with open(path, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        self.parts += 1

    def commit(self) -> str:
        """Make the run visible at once; returns its folder."""
        if self.final.exists():
            raise BatchError(f"{self.final} exists already; refusing to overwrite a finished run")
        _fsync_dir(self.tmp)
        os.rename(self.tmp, self.final)
        _fsync_dir(self.root)
        return str(self.final)

    def abort(self) -> None:
        """Drop the parts written so far."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pg_type(kind: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_integer(kind):
        return "BIGINT"
    if pa.types.is_floating(kind):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMPTZ"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    return "TEXT"


class TableSink:
    """One run into a PostgreSQL table, in one transaction: created when missing, the run's rows replaced by COPY."""

    def __init__(self, url: str, table: str, schema: pa.Schema, run_id: str) -> None:
        import psycopg
        from psycopg import sql

        self.table = table
        self.columns = schema.names
        self._error = psycopg.Error
        parts = table.split(".")
        self.target = sql.Identifier(*parts)
        try:
            self.connection = psycopg.connect(url, connect_timeout=15)
        except psycopg.Error as exc:  # the message names host and user at most, never the password
            raise BatchError(f"cannot connect to the database of table {table}: {_first_line(exc)}") from None
        try:
            with self.connection.cursor() as cursor:
                if len(parts) > 1:
                    cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(*parts[:-1])))
                columns = sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(field.name), sql.SQL(_pg_type(field.type)))
                    for field in schema
                )
                cursor.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.target, columns))
                cursor.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(self.target), (run_id,))
            self.cursor = self.connection.cursor()
            names = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
            self.copy_context = self.cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(self.target, names))
            self.copy = self.copy_context.__enter__()
        except psycopg.Error as exc:
            self.abort()
            raise BatchError(f"cannot write predictions to table {table}: {_first_line(exc)}") from None
        self.parts = 0

    def write(self, table: pa.Table) -> None:
        """COPY one chunk's rows."""
        data = table.to_pydict()
        try:
            for row in zip(*(data[c] for c in self.columns), strict=True):
                self.copy.write_row(row)
        except self._error as exc:
            self.abort()
            raise BatchError(f"cannot write predictions to table {self.table}: {_first_line(exc)}") from None
        self.parts += 1

    def commit(self) -> str:
        """End the COPY and commit: the run's rows appear at once."""
        try:
            self.copy_context.__exit__(None, None, None)
            self.connection.commit()
        except self._error as exc:
            self.abort()
            raise BatchError(f"cannot write predictions to table {self.table}: {_first_line(exc)}") from None
        finally:
            self.connection.close()
        return self.table

    def abort(self) -> None:
        """Roll the transaction back: none of the run's rows were written."""
        with contextlib.suppress(Exception):  # the connection may be broken already; closing is all that is left
            self.connection.rollback()
        self.connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def _open_sink(
    ctx: RuntimeContext, sink: dict[str, Any], schema: pa.Schema, run_id: str, scored_at: dt.datetime
) -> ParquetSink | TableSink:
    if sink.get("table"):
        connection = sink.get("connection")
        if not connection:
            raise BatchError(f"table sink {sink['table']} has no connection reference")
        try:
            url = resolve_reference(connection)
        except LookupError as exc:
            raise BatchError(f"the connection of table sink {sink['table']}: {exc}") from None
        return TableSink(url, sink["table"], schema, run_id)
    root = Path(ctx.data_dir) / sink["path"]
    return ParquetSink(root, scored_at.strftime("%Y%m%dT%H%M%S.%fZ"))


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


def score(  # noqa: PLR0915, PLR0917  (KFP components call steps positionally; one run reads best in one place)
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
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlspec.runtime.dataset import FEATURES_KEY, ROW_ID, TIMESTAMP

    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    spec = json.loads(deployment_json)
    name, body = spec["metadata"]["name"], spec["spec"]
    batch, runtime = body["batch"], body.get("runtime", {})
    run_id = run_id.strip() or uuid.uuid4().hex
    version = _resolve_model(ctx, body["model"], json.loads(expected_sha256_json or "{}"))
    features = list(version.features)
    from mlspec.crypto import CryptoError

    try:
        table = pq.read_table(pa.BufferReader(ctx.read(dataset_path)))
    except CryptoError as exc:
        raise BatchError(f"cannot read the fetched features: {exc}") from None
    provided: list[str] = json.loads((table.schema.metadata or {})[FEATURES_KEY])
    lacking = [f for f in features if f not in provided]
    if lacking:
        raise BatchError(
            f"{version.name} v{version.version} takes {lacking}, which feature service '{feature_service}' does not "
            f"provide ({provided}); point spec.features at the model's feature service"
        )
    frame = table.to_pandas().sort_values(ROW_ID, kind="stable").reset_index(drop=True)
    keys = [c for c in frame.columns if c not in (ROW_ID, TIMESTAMP, *provided)]
    model = _load(ctx, name, version, runtime)
    device_info = model.device_info() if hasattr(model, "device_info") else {"device": model.device}
    output = next(o for o in model.session.get_outputs() if o.name == model.output_name)
    multiclass = len(output.shape) == 2 and output.shape[1] != 1

    scored_at = dt.datetime.now(dt.UTC)
    meta = {"model_name": version.name, "model_version": version.version, "scored_at": scored_at, "run_id": run_id}
    chunk_size = int(batch.get("chunk_size", 10_000))
    sink_spec = batch["sink"]
    sink: ParquetSink | TableSink | None = None
    missing = imputed = chunks = 0
    scoring_clock = time.perf_counter()
    try:
        for start in range(0, max(len(frame), 1), chunk_size):
            part = frame.iloc[start : start + chunk_size]
            numbers = part[features].apply(pd.to_numeric, errors="coerce")
            x = numbers.to_numpy(dtype=np.float32, na_value=np.nan)
            absent = np.isnan(x).all(axis=1) if features else np.zeros(len(x), dtype=bool)
            missing += int(absent.sum())
            imputed += int((np.isnan(x).any(axis=1) & ~absent).sum())
            scores = np.full(len(part), np.nan, dtype=np.float32)
            classes = np.full(len(part), -1, dtype=np.int32) if multiclass else None
            if (~absent).any():
                out = np.asarray(model.run(np.ascontiguousarray(x[~absent])))
                if classes is not None:  # class probabilities: the most likely class and its probability
                    classes[~absent] = out.argmax(axis=1)
                    scores[~absent] = out.max(axis=1)
                else:
                    scores[~absent] = out.reshape(-1)
            chunk = pa.table(_columns(part, keys, scores, classes, meta))
            if sink is None:
                sink = _open_sink(ctx, sink_spec, chunk.schema, run_id, scored_at)
            sink.write(chunk)
            chunks += 1
            failpoint("batch.after_chunk")
        assert sink is not None
        location = sink.commit()
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
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
        "scored": len(frame) - missing,
        "missing_features": missing,
        "imputed_rows": imputed,
        "chunks": chunks,
        "chunk_size": chunk_size,
        "seconds": round(seconds, 3),  # the whole step: registry, model load, scoring, writing
        "scoring_seconds": round(scoring, 3),  # scoring and writing the chunks
        "rows_per_second": round(len(frame) / scoring, 1) if scoring > 0 else None,
        "started_at": started.isoformat(),
        "scored_at": scored_at.isoformat(),
        "finished_at": finished.isoformat(),
        "sink": sink_label(batch),
        "location": location,
        **{k: v for k, v in device_info.items() if k in ("device", "requested_device", "fallback_reason")},
        "spec_sha256": spec_digest(deployment_json, feature_service),
    }
    _record(ctx, name, summary)
    return json.dumps(summary, sort_keys=True)
