"""Size and CPU latency of a model with onnxruntime: single-row p50/p99 and batch throughput, one thread.

One intra-op thread is what a small device gives a model; the numbers are for comparing
the full and the quantized model on the same machine, not a promise about the device.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlspec.edge.quantize import session

if TYPE_CHECKING:
    import numpy as np

SINGLE_RUNS = 300
WARMUP = 20
BATCH_ROWS = 1024
BATCH_RUNS = 5


def measure(model_bytes: bytes, rows: np.ndarray, *, single_runs: int = SINGLE_RUNS) -> dict[str, Any]:
    """Bytes, single-row latency percentiles (ms) and batch rows/s of ``model_bytes`` over ``rows`` (float32)."""
    from importlib.metadata import version

    import numpy as np

    run = session(model_bytes, threads=1)
    name = run.get_inputs()[0].name
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if len(rows) == 0:
        raise ValueError("no rows to time the model with")
    singles = [rows[i % len(rows)][None, :] for i in range(single_runs)]
    for row in singles[:WARMUP]:
        run.run(None, {name: row})
    times: list[float] = []
    for row in singles:
        start = time.perf_counter_ns()
        run.run(None, {name: row})
        times.append((time.perf_counter_ns() - start) / 1e6)
    batch = np.ascontiguousarray(np.resize(rows, (BATCH_ROWS, rows.shape[1])))
    run.run(None, {name: batch})
    began = time.perf_counter()
    for _ in range(BATCH_RUNS):
        run.run(None, {name: batch})
    elapsed = time.perf_counter() - began
    return {
        "bytes": len(model_bytes),
        "single_row_p50_ms": round(float(np.percentile(times, 50)), 4),
        "single_row_p99_ms": round(float(np.percentile(times, 99)), 4),
        "single_row_runs": single_runs,
        "batch_rows": BATCH_ROWS,
        "batch_rows_per_s": round(BATCH_ROWS * BATCH_RUNS / elapsed, 1),
        "threads": 1,
        "provider": "CPUExecutionProvider",
        "onnxruntime": version("onnxruntime"),
    }


def report(full: bytes, quantized: bytes | None, rows: np.ndarray) -> dict[str, Any]:
    """The full model's numbers, the quantized one's (when there is one) and their size ratio."""
    out: dict[str, Any] = {"full": measure(full, rows)}
    if quantized is not None:
        out["quantized"] = measure(quantized, rows)
        out["size_ratio"] = round(len(quantized) / len(full), 4)
    return out
