"""The load of bench/serving.py: wrk runs (pinned to the client CPU) and one-request-at-a-time Python clients of the
Open Inference Protocol over REST and gRPC (bench/serving_grpc.py prints every client)."""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving_servers import CLIENT_CPU, FEATURES, REPO, pinning

WRK_MISSING = "wrk is not installed; install it with: apt-get install -y wrk  (or: brew install wrk)"


@dataclass(frozen=True)
class Run:
    """One measurement: requests per second, p50 and p99 latency in milliseconds."""

    rps: float
    p50: float
    p99: float


def median(runs: list[Run]) -> Run:
    """The median of each figure over repeated runs."""
    return Run(*(statistics.median(getattr(r, f) for r in runs) for f in ("rps", "p50", "p99")))


def wrk(url: str, body: dict[str, Any], conns: int, secs: int, folder: Path, *, headers: dict[str, str]) -> Run:
    """One ``wrk -t1`` run POSTing ``body`` with ``headers`` over ``conns`` connections (on the client CPU)."""
    script = folder / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    command = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    pin = [] if pinning() else ["taskset", "-c", str(CLIENT_CPU)]
    out = subprocess.run([*pin, *command, url], capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        sys.exit(f"wrk saw error responses from {url}:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found, out
    return Run(float(found.group(1)), _ms(out, "50%"), _ms(out, "99%"))


def _ms(out: str, pct: str) -> float:
    match = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out)
    assert match, out
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@contextmanager
def on_client_cpu() -> Iterator[None]:
    """Run this process on the client CPU for a while (Python clients), as wrk runs."""
    before = os.sched_getaffinity(0)
    if not pinning():
        os.sched_setaffinity(0, {CLIENT_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def timed(call: Callable[[], object], n: int) -> Run:
    """``n`` calls one at a time (after a warm-up of n // 10): calls per second (1 / mean), p50 and p99 in ms."""
    for _ in range(max(50, n // 10)):
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return Run(1e3 / statistics.fmean(samples), samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1])


def python_clients(http_addr: str, grpc_addr: str, every: bool = False) -> dict[str, Callable[[], object]]:
    """One single-row request per call: REST over a kept-open http.client connection and the generated gRPC stub;
    with ``every``, also Triton's HTTP and gRPC clients and the stub's ServerLive (gRPC's own floor)."""
    import grpc
    import numpy as np

    if str(REPO / "compiler") not in sys.path:
        sys.path.insert(0, str(REPO / "compiler"))
    from mlspec.serving.oip_grpc import open_inference_grpc_pb2 as pb
    from mlspec.serving.oip_grpc import open_inference_grpc_pb2_grpc as service

    row = np.full((1, FEATURES), 0.5, dtype=np.float32)
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": row.tolist()}]})

    def rest_plain() -> object:
        conn.request("POST", "/v2/models/bench/infer", body, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
        assert reply.status == 200, data
        return json.loads(data)

    stub = service.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_addr))
    typed = pb.ModelInferRequest(model_name="bench")
    typed.inputs.add(name="input", datatype="FP32", shape=[1, FEATURES]).contents.fp32_contents.extend(row.ravel())
    calls: dict[str, Callable[[], object]] = {
        "rest/http.client": rest_plain,
        "grpc/stub": lambda: stub.ModelInfer(typed),
    }
    if every:
        import tritonclient.grpc as triton_grpc
        import tritonclient.http as triton_http

        rest_triton = triton_http.InferenceServerClient(http_addr)
        http_input = triton_http.InferInput("input", [1, FEATURES], "FP32")
        http_input.set_data_from_numpy(row, binary_data=False)
        grpc_triton = triton_grpc.InferenceServerClient(grpc_addr)
        grpc_input = triton_grpc.InferInput("input", [1, FEATURES], "FP32")
        grpc_input.set_data_from_numpy(row)
        calls["rest/tritonclient"] = lambda: rest_triton.infer("bench", [http_input]).as_numpy("score")
        calls["grpc/tritonclient"] = lambda: grpc_triton.infer("bench", [grpc_input]).as_numpy("score")
        calls["grpc/stub ServerLive"] = lambda: stub.ServerLive(pb.ServerLiveRequest())
    return calls
