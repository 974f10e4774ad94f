"""Benchmark: single-row latency at concurrency 1, the Open Inference Protocol over gRPC vs REST, one server.

The server (``python -m mlspec.serving``, batching on, uvloop unless --pure) serves a 32-feature linear ONNX model on
both listeners; each client sends the same row one request at a time on one kept-open connection:

  - rest/http.client:  the JSON body over a keep-alive http.client connection (the lightest Python client)
  - rest/tritonclient: Triton's HTTP client (tritonclient.http, JSON)
  - grpc/tritonclient: Triton's gRPC client (tritonclient.grpc: raw_input_contents in, raw_output_contents out)
  - grpc/stub:         the generated stub (typed fp32_contents in and out)
  - grpc/stub ServerLive: the stub's ServerLive, no inference: what any call costs on this gRPC stack

Prints p50, p99 and mean in microseconds per request (client time, loopback).

Usage: python bench/serving_grpc.py [--requests 3000] [--pure]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "compiler"))
FEATURES = 32


def linear_model(path: Path) -> str:
    """score = input @ W + b for 32 features, written to ``path``; returns its sha256."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.linspace(-1, 1, FEATURES, dtype=np.float32).reshape(FEATURES, 1), "W")
    bias = numpy_helper.from_array(np.array([0.1], dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["score"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def timed(call: Callable[[], object], n: int) -> tuple[float, float, float]:
    """p50, p99 and mean microseconds of ``n`` calls (after a warm-up of n // 10)."""
    for _ in range(max(50, n // 10)):
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1], statistics.fmean(samples)


def clients(http_addr: str, grpc_addr: str) -> dict[str, Callable[[], object]]:
    """One single-row request per call, for each client."""
    import grpc
    import numpy as np
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    from mlspec.serving.oip_grpc import open_inference_grpc_pb2 as pb
    from mlspec.serving.oip_grpc import open_inference_grpc_pb2_grpc as service

    row = np.full((1, FEATURES), 0.5, dtype=np.float32)
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": row.tolist()}]})

    def rest_plain() -> object:
        conn.request("POST", "/v2/models/bench/infer", body, {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())

    rest_triton = triton_http.InferenceServerClient(http_addr)
    http_input = triton_http.InferInput("input", [1, FEATURES], "FP32")
    http_input.set_data_from_numpy(row, binary_data=False)
    grpc_triton = triton_grpc.InferenceServerClient(grpc_addr)
    grpc_input = triton_grpc.InferInput("input", [1, FEATURES], "FP32")
    grpc_input.set_data_from_numpy(row)
    stub = service.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_addr))
    typed = pb.ModelInferRequest(model_name="bench")
    typed.inputs.add(name="input", datatype="FP32", shape=[1, FEATURES]).contents.fp32_contents.extend(row.ravel())
    return {
        "rest/http.client": rest_plain,
        "rest/tritonclient": lambda: rest_triton.infer("bench", [http_input]).as_numpy("score"),
        "grpc/tritonclient": lambda: grpc_triton.infer("bench", [grpc_input]).as_numpy("score"),
        "grpc/stub": lambda: stub.ModelInfer(typed),
        "grpc/stub ServerLive": lambda: stub.ServerLive(pb.ServerLiveRequest()),  # gRPC's own floor, no inference
    }


def main() -> int:
    """Start the server, time every client, print the table."""
    from mlspec.serving import process

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--pure", action="store_true", help="asyncio's own loop instead of uvloop (and no httptools)")
    args = parser.parse_args()
    if args.pure:
        os.environ["MLSPEC_SERVING_PURE"] = "1"
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        folder = Path(tmp)
        sha = linear_model(folder / "model.onnx")
        config = {
            "deployment": "bench", "model_name": "bench", "host": "127.0.0.1", "port": 0, "grpc_port": 0,
            "features": [f"f{i}" for i in range(FEATURES)], "rollout": {"strategy": "direct"},
            "variants": [{"name": "stable", "version": "1", "path": str(folder / "model.onnx"), "sha256": sha}],
        }  # fmt: skip
        (folder / "serving.json").write_text(json.dumps(config))
        log = folder / "server.log"
        pid = process.start(folder / "serving.json", log, timeout=60)
        try:
            text = log.read_text()
            http_addr = re.findall(r"listening on http://(\S+)", text)[-1]
            grpc_addr = re.findall(r"grpc listening on (\S+)", text)[-1]
            print(
                f"{'client':<22} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}   (loop: {'asyncio' if args.pure else 'uvloop'})"
            )
            for name, call in clients(http_addr, grpc_addr).items():
                p50, p99, mean = timed(call, args.requests)
                print(f"{name:<22} {p50:>8.0f} {p99:>8.0f} {mean:>8.0f}")
        finally:
            process.stop(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
