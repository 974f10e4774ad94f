"""Serving on onnxruntime's CUDA execution provider versus CPU, on the same ONNX MLP, through the server's device code.

Builds one MLP (``input`` FP32 [N, F] -> ``score`` [N, 1], written as ONNX protobuf
directly) and opens it the way the model server does (``plan_device`` and
``open_session`` of ``mlspec.serving.models``: CUDA, then CPU, with the fallback's
reason; ``--tensorrt`` puts TensorRT first, as the server does where onnxruntime offers
it), once asked for ``device: cpu`` and once for ``device: gpu, fallback: cpu``.
Prints one table: providers in use, batch-1 latency p50/p99 (one ``session.run`` per
request, numpy in and out, as the server calls it; host-device copies included) and
batch-1024 throughput, then the speed-up; every row's scores are checked against numpy.
Without a usable CUDA provider it prints the CPU row and ``cuda: not available
(fallback to cpu)`` with the reason the server would give.

    python bench/gpu_serving.py [--features 32] [--hidden 512,512] [--threads 0] [--tensorrt]

Needs only numpy and onnxruntime (onnxruntime-gpu for the CUDA row); of mlspec it
imports ``mlspec.serving.models`` and ``mlspec.serving.config`` (no pydantic).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "compiler"))
FLOAT = 1  # onnx TensorProto.FLOAT


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    """One protobuf field: an integer as a varint, text or bytes (or an encoded message) length-delimited."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor_type(dims: list[int | str]) -> bytes:
    """ONNX TypeProto of an FP32 tensor; a str dim is symbolic (the batch)."""
    shape = b"".join(_field(1, _field(2 if isinstance(d, str) else 1, d)) for d in dims)
    return _field(1, _field(1, FLOAT) + _field(2, shape))


def mlp_onnx(features: int, hidden: list[int], seed: int = 7) -> tuple[bytes, list[Any]]:
    """An MLP as ONNX bytes (Gemm+Relu per hidden layer, Gemm+Sigmoid to one ``score``; opset 17) and its weights.

    Written as protobuf directly (ModelProto, field numbers from onnx.proto), so neither the onnx package nor
    torch is needed where the bench runs; tests/unit/test_serving.py checks it with onnx's own checker."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = [features, *hidden, 1]
    nodes, initializers, weights = [], [], []
    current = "input"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype("<f4")
        b = (rng.normal(size=n_out) * 0.1).astype("<f4")
        weights += [w, b]
        for name, array in ((f"W{i}", w), (f"B{i}", b)):
            dims = b"".join(_field(1, d) for d in array.shape)
            initializers.append(dims + _field(2, FLOAT) + _field(8, name) + _field(9, array.tobytes()))
        last = i == len(sizes) - 2
        nodes.append(
            _field(1, current) + _field(1, f"W{i}") + _field(1, f"B{i}") + _field(2, f"z{i}") + _field(4, "Gemm")
        )
        current = "score" if last else f"h{i}"
        nodes.append(_field(1, f"z{i}") + _field(2, current) + _field(4, "Sigmoid" if last else "Relu"))
    graph = (
        b"".join(_field(1, n) for n in nodes)
        + _field(2, "mlp")
        + b"".join(_field(5, t) for t in initializers)
        + _field(11, _field(1, "input") + _field(2, _tensor_type(["N", features])))
        + _field(12, _field(1, "score") + _field(2, _tensor_type(["N", 1])))
    )
    model = _field(1, 8) + _field(2, "mlspec-bench") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))
    return model, weights


def numpy_mlp(weights: list[Any], rows: Any) -> Any:
    """The same MLP in numpy (the reference the providers' scores are checked against)."""
    import numpy as np

    out = rows.astype(np.float64)
    for i in range(0, len(weights), 2):
        out = out @ weights[i] + weights[i + 1]
        out = np.maximum(out, 0) if i < len(weights) - 2 else 1 / (1 + np.exp(-out))
    return out


def open_as_server(data: bytes, device: str, threads: int, tensorrt: bool) -> tuple[Any, Any]:
    """A session opened as the model server opens it for ``device`` (fallback cpu): (session, DevicePlan).
    Without ``tensorrt`` the TensorRT provider is left out even where onnxruntime offers it (CUDA only)."""
    import hashlib

    import onnxruntime as ort

    from mlspec.serving.config import VariantConfig
    from mlspec.serving.models import open_session, plan_device

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    variant = VariantConfig("bench", "bench", "1", "<memory>", hashlib.sha256(data).hexdigest())
    available = [p for p in ort.get_available_providers() if tensorrt or p != "TensorrtExecutionProvider"]
    return open_session(data, options, plan_device(device, "cpu", available), "cpu", variant)


def measure(session: Any, features: int, requests: int, seconds: float) -> dict[str, float]:
    """Batch-1 latency (p50, p99 in ms over ``requests`` runs) and batch-1024 rows per second (for ``seconds``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    one = [rng.normal(size=(1, features)).astype(np.float32) for _ in range(64)]
    big = rng.normal(size=(1024, features)).astype(np.float32)
    run = session.run
    for i in range(200):  # warm-up: allocations, kernel selection, CUDA context
        run(["score"], {"input": one[i % 64]})
    for _ in range(5):
        run(["score"], {"input": big})
    times = []
    clock = time.perf_counter
    for i in range(requests):
        started = clock()
        run(["score"], {"input": one[i % 64]})
        times.append(clock() - started)
    times.sort()
    batches = 0
    started = clock()
    while clock() - started < seconds:
        run(["score"], {"input": big})
        batches += 1
    elapsed = clock() - started
    return {
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": times[max(0, int(0.99 * len(times)) - 1)] * 1e3,
        "rows_per_s": batches * 1024 / elapsed,
    }


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", default="512,512")
    parser.add_argument("--requests", type=int, default=2000, help="batch-1 runs timed")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent on batch-1024 throughput")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="let the GPU row take TensorRT first, as the server does (default: CUDA)",
    )
    args = parser.parse_args()
    import numpy as np
    import onnxruntime as ort

    hidden = [int(h) for h in args.hidden.split(",")]
    data, weights = mlp_onnx(args.features, hidden)
    print(
        f"onnxruntime {ort.__version__}, providers: {', '.join(ort.get_available_providers())}; {os.cpu_count()} CPUs"
    )
    print(f"MLP {args.features} -> {hidden} -> 1; intra-op threads {args.threads or 'default'}")
    print(f"{'asked':<6} {'device':<6} {'providers':<44} {'b1 p50 ms':>10} {'b1 p99 ms':>10} {'b1024 rows/s':>13}")
    results: dict[str, dict[str, float]] = {}
    probe = np.random.default_rng(1).normal(size=(1024, args.features)).astype(np.float32)
    expected = numpy_mlp(weights, probe)
    for asked in ("cpu", "gpu"):
        session, plan = open_as_server(data, asked, args.threads, args.tensorrt)
        if asked == "gpu" and plan.fallback:
            print(f"cuda: not available (fallback to cpu): {plan.fallback_reason}")
            break
        diff = float(np.abs(session.run(["score"], {"input": probe})[0] - expected).max())
        if diff > 1e-3:
            print(f"{asked}: scores differ from numpy by {diff:.2e}; not timing a wrong model")
            return 1
        row = measure(session, args.features, args.requests, args.seconds)
        results[plan.device] = {**row, "diff": diff}
        print(
            f"{asked:<6} {plan.device:<6} {', '.join(plan.providers):<44} {row['p50_ms']:>10.3f} "
            f"{row['p99_ms']:>10.3f} {row['rows_per_s']:>13,.0f}"
        )
    if "gpu" in results:
        cpu, gpu = results["cpu"], results["gpu"]
        print(
            f"speed-up on GPU: batch-1 p50 {cpu['p50_ms'] / gpu['p50_ms']:.2f}x, "
            f"batch-1024 throughput {gpu['rows_per_s'] / cpu['rows_per_s']:.1f}x; "
            f"max |score - numpy| over 1024 rows: cpu {cpu['diff']:.1e}, gpu {gpu['diff']:.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
