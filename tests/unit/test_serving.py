"""The local model server, end to end: real onnxruntime sessions behind real HTTP on loopback."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mlspec.serving import client, models, process  # noqa: E402
from mlspec.serving.config import ConfigError, ServingConfig, VariantConfig  # noqa: E402
from mlspec.serving.http import FallbackParser, ParseError  # noqa: E402
from mlspec.serving.models import DevicePlan, ModelError, choose_providers, open_session, plan_device  # noqa: E402
from mlspec.serving.router import sticky_point  # noqa: E402

FEATURES = ["a", "b", "c"]
TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
# A machine whose onnxruntime offers a GPU provider checks the GPU path; this CPU-only one checks the fallback.
GPU = any(p in ort.get_available_providers() for p in (TRT, CUDA))


def linear_onnx(path: Path, weight: list[float], bias: float = 0.0, sqrt: bool = False) -> str:
    """score = input @ weight + bias (optionally sqrt of it: NaN for negative values); returns the sha256."""
    w = numpy_helper.from_array(np.array(weight, dtype=np.float32).reshape(len(weight), 1), "W")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "B")
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["lin" if sqrt else "score"]),
    ]
    if sqrt:
        nodes.append(helper.make_node("Sqrt", ["lin"], ["score"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", len(weight)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def ort_scores(path: Path, rows: list[list[float]]) -> list[float]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.array(rows, dtype=np.float32)})[0]
    return [float(v) for v in out.ravel()]


@dataclass
class Server:
    url: str
    pid: int
    config_path: Path
    log: Path
    tmp: Path
    config: dict[str, Any]

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.url.split("://", 1)[1].split(":")
        return host, int(port)

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self.addr, timeout=10)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        conn = self.conn()
        try:
            raw = body if isinstance(body, bytes | None) else json.dumps(body).encode()
            conn.request(method, path, body=raw, headers=headers or {})
            reply = conn.getresponse()
            data = reply.read()
            ctype = reply.getheader("Content-Type", "")
            return reply.status, json.loads(data) if "json" in ctype else data.decode()
        finally:
            conn.close()

    def infer(self, rows: list[list[float]], path: str = "/v2/models/fraud-api/infer", **extra: Any) -> tuple[int, Any]:
        body = {"inputs": [{"name": "input", "shape": [len(rows), 3], "datatype": "FP32", "data": rows}], **extra}
        return self.request("POST", path, body)

    def status(self) -> dict[str, Any]:
        return client.rollout_status(self.url, "fraud-api")

    def metrics(self) -> str:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        return str(text)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def url_of(log: Path, offset: int = 0) -> str:
    found = re.findall(r"listening on (https?://\S+)", log.read_text()[offset:])
    assert found, log.read_text()
    return str(found[-1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[int] = []

    def start(variants: list[dict[str, Any]], rollout: dict[str, Any] | None = None, **over: Any) -> Server:
        config = {
            "deployment": "fraud-api",
            "model_name": "fraud-detector",
            "host": "127.0.0.1",
            "port": 0,
            "device": "cpu",
            "fallback": "cpu",
            "batching": True,
            "features": FEATURES,
            "variants": variants,
            "rollout": rollout or {"strategy": "direct"},
            "log": {"path": str(tmp_path / "requests.jsonl"), "sample_rate": 0.0, "enabled": False},
            "status_path": str(tmp_path / "rollout.json"),
            **over,
        }
        path = tmp_path / "serving.json"
        path.write_text(json.dumps(config))
        log = tmp_path / "server.log"
        pid = process.start(path, log, timeout=30)
        started.append(pid)
        return Server(url_of(log), pid, path, log, tmp_path, config)

    yield start
    for pid in started:
        process.stop(pid)


def variant(tmp: Path, name: str, version: str, weight: list[float], bias: float = 0.0, sqrt: bool = False,
            alias: str | None = None) -> dict[str, Any]:  # fmt: skip
    path = tmp / f"{name}-{version}.onnx"
    sha = linear_onnx(path, weight, bias, sqrt)
    return {"name": name, "alias": alias or name, "version": version, "path": str(path), "sha256": sha}


STABLE_W = [1.0, 2.0, 3.0]
CANARY_W = [1.0, 1.0, 1.0]


def score(weight: list[float], row: list[float], bias: float = 0.0) -> float:
    return sum(w * x for w, x in zip(weight, row, strict=True)) + bias


# --- endpoints and the protocol ------------------------------------------------------------------------


def test_oip_endpoints_and_errors(serve: Callable[..., Server], tmp_path: Path) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable])
    assert srv.request("GET", "/v2/health/live") == (200, {"live": True})
    assert srv.request("GET", "/v2/health/ready")[0] == 200
    status, meta = srv.request("GET", "/v2")
    assert status == 200 and meta["name"] == "mlspec"
    status, meta = srv.request("GET", "/v2/models/fraud-api")
    assert status == 200
    assert meta["name"] == "fraud-api" and meta["versions"] == ["3"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"][0]["name"] == "score" and meta["parameters"]["device"] == "cpu"
    assert srv.request("GET", "/v2/models/fraud-api/ready")[0] == 200

    rows = [[0.5, -1.0, 2.0], [3.0, 0.25, 1.0]]
    expected = ort_scores(Path(stable["path"]), rows)
    status, out = srv.infer(rows, id="req-7")
    assert status == 200, out
    assert out["model_name"] == "fraud-api" and out["model_version"] == "3" and out["id"] == "req-7"
    assert out["parameters"] == {"variant": "stable"}
    assert out["outputs"][0]["shape"] == [2, 1] and out["outputs"][0]["datatype"] == "FP32"
    assert out["outputs"][0]["data"] == pytest.approx(expected)
    assert expected == pytest.approx([score(STABLE_W, r) for r in rows])
    # flat data, the registered model's name, a pinned version, and per-feature inputs give the same scores
    flat = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [v for r in rows for v in r]}]}
    assert srv.request("POST", "/v2/models/fraud-detector/infer", flat)[1]["outputs"][0]["data"] == pytest.approx(
        expected
    )
    assert srv.infer(rows, path="/v2/models/fraud-api/versions/3/infer")[1]["outputs"][0]["data"] == pytest.approx(
        expected
    )
    per_feature = {
        "inputs": [
            {"name": "c", "shape": [2], "datatype": "FP64", "data": [2.0, 1.0]},
            {"name": "a", "shape": [2, 1], "datatype": "FP32", "data": [[0.5], [3.0]]},
            {"name": "b", "shape": [2], "datatype": "FP32", "data": [-1.0, 0.25]},
        ]
    }
    status, out = srv.request("POST", "/v2/models/fraud-api/infer", per_feature)
    assert status == 200 and out["outputs"][0]["data"] == pytest.approx(expected)

    # errors say what is wrong
    status, err = srv.infer(rows, path="/v2/models/nope/infer")
    assert status == 404 and "nope" in err["error"]
    status, err = srv.infer(rows, path="/v2/models/fraud-api/versions/9/infer")
    assert status == 404 and "9" in err["error"]
    status, err = srv.request("POST", "/v2/models/fraud-api/infer", b"{not json")
    assert status == 400 and "JSON" in err["error"]
    bad_shape = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    status, err = srv.request("POST", "/v2/models/fraud-api/infer", bad_shape)
    assert status == 400 and "shape [1, 2]" in err["error"]
    bad_type = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["x", "y", "z"]}]}
    status, err = srv.request("POST", "/v2/models/fraud-api/infer", bad_type)
    assert status == 400 and "datatype" in err["error"]
    short = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    status, err = srv.request("POST", "/v2/models/fraud-api/infer", short)
    assert status == 400 and "3 values" in err["error"]
    missing = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    status, err = srv.request("POST", "/v2/models/fraud-api/infer", missing)
    assert status == 400 and "b, c" in err["error"]
    assert srv.request("GET", "/v2/models/fraud-api/infer")[0] == 405
    assert srv.request("GET", "/v2/nothing")[0] == 404

    text = srv.metrics()
    assert 'mlspec_requests_total{deployment="fraud-api",variant="stable",version="3"} 4' in text
    assert (
        'mlspec_model_info{deployment="fraud-api",variant="stable",version="3",alias="stable",device="cpu",'
        'requested="cpu",providers="CPUExecutionProvider"} 1' in text
    )
    assert "# TYPE mlspec_request_duration_seconds histogram" in text
    assert 'mlspec_traffic_weight_percent{deployment="fraud-api",variant="stable",version="3"} 100' in text


def test_a_wrong_method_answers_405_with_allow_and_misses_say_what_is_not_there(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    for method, path, allow in (
        ("GET", "/v2/models/fraud-api/infer", "POST"),
        ("GET", "/v2/models/fraud-detector/versions/3/infer", "POST"),
        ("POST", "/v2/models/fraud-api", "GET"),
        ("DELETE", "/v2/models/fraud-api/rollout", "GET"),
        ("POST", "/metrics", "GET"),
        ("PUT", "/v2/health/ready", "GET"),
    ):
        conn = srv.conn()
        try:
            conn.request(method, path, body=b"{}")
            reply = conn.getresponse()
            body = json.loads(reply.read())
        finally:
            conn.close()
        assert (reply.status, reply.getheader("Allow")) == (405, allow), (method, path)
        assert method in body["error"] and path in body["error"]
    # a query string or a trailing slash reaches the same route; the model name may be the registered one
    assert srv.request("GET", "/v2/models/fraud-api/ready/?probe=1") == (200, {"name": "fraud-api", "ready": True})
    assert srv.request("GET", "/v2/models/fraud-detector/versions/3")[1]["versions"] == ["3"]
    status, err = srv.request("GET", "/v2/models/fraud-api/versions/9/ready")
    assert status == 404 and "no version '9'" in err["error"] and "3" in err["error"]
    status, err = srv.request("GET", "/v2/models/other/ready")
    assert status == 404 and "unknown model 'other'" in err["error"]
    assert srv.request("GET", "/v2/models/fraud-api/versions/3/rollout")[0] == 404  # the rollout is not per version
    assert srv.metric("mlspec_http_responses_total", code="405") == 6


def raw_requests(srv: Server, bodies: list[bytes], path: str = "/v2/models/fraud-api/infer") -> list[dict[str, Any]]:
    """Send ``bodies`` pipelined in ONE write on one keep-alive connection; read the responses in order."""
    payload = b"".join(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), len(b), b)
        for b in bodies
    )
    with socket.create_connection(srv.addr, timeout=10) as sock:
        sock.sendall(payload)
        buffer = b""
        replies: list[dict[str, Any]] = []
        while len(replies) < len(bodies):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buffer += chunk
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    break
                length = int(re.search(rb"Content-Length: (\d+)", buffer[:end]).group(1))  # type: ignore[union-attr]
                if len(buffer) < end + 4 + length:
                    break
                replies.append(json.loads(buffer[end + 4 : end + 4 + length]))
                buffer = buffer[end + 4 + length :]
    return replies


def body(row: list[float], rid: str) -> bytes:
    return json.dumps(
        {"id": rid, "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": row}]}
    ).encode()


def test_pipelining_batches_and_keeps_order(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    rows = [[float(i), float(i % 7), -float(i) / 3] for i in range(40)]
    bodies = [body(r, f"r{i}") for i, r in enumerate(rows)]
    bodies.insert(5, b"{broken")  # an error in the middle keeps its place
    replies = raw_requests(srv, bodies)
    assert replies[5] == {"error": replies[5]["error"]} and "JSON" in replies[5]["error"]
    del replies[5]
    for i, (row, reply) in enumerate(zip(rows, replies, strict=True)):
        assert reply["id"] == f"r{i}"
        assert reply["outputs"][0]["data"] == pytest.approx([score(STABLE_W, row)], rel=1e-5, abs=1e-4)
    # the pipelined requests arrived in one read, so they ran as batches of more than one row
    batches = srv.metric("mlspec_batch_size_rows_count", variant="stable")
    assert 0 < batches < 40
    assert srv.metric("mlspec_batch_size_rows_sum", variant="stable") == 40


def test_concurrent_clients_are_batched_and_answered_correctly(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    results: dict[int, float] = {}
    errors: list[str] = []
    barrier = threading.Barrier(12)

    def worker(index: int) -> None:
        conn = srv.conn()
        barrier.wait()
        for j in range(15):
            row = [float(index), float(j), 1.0]
            conn.request("POST", "/v2/models/fraud-api/infer", body=body(row, f"{index}-{j}"))
            reply = json.loads(conn.getresponse().read())
            if reply.get("id") != f"{index}-{j}":
                errors.append(str(reply))
            results[index * 100 + j] = reply["outputs"][0]["data"][0]
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for key, value in results.items():
        assert value == pytest.approx(score(STABLE_W, [float(key // 100), float(key % 100), 1.0]))
    assert srv.metric("mlspec_batch_size_rows_sum", variant="stable") == 180
    # rows per session.run: some runs carried more than one request
    assert srv.metric("mlspec_batch_size_rows_count", variant="stable") < 180


def test_fallback_parser_server(serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSPEC_SERVING_PURE", "1")  # no httptools, no uvloop
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    rows = [[1.0, 2.0, 3.0], [0.0, 0.5, -1.0]]
    replies = raw_requests(srv, [body(r, str(i)) for i, r in enumerate(rows)])
    assert [r["outputs"][0]["data"][0] for r in replies] == pytest.approx([score(STABLE_W, r) for r in rows])
    assert srv.request("GET", "/v2/health/ready")[0] == 200


def test_fallback_parser_unit() -> None:
    events: list[tuple[str, bytes]] = []

    class Sink:
        def on_url(self, url: bytes) -> None:
            events.append(("url", url))

        def on_header(self, name: bytes, value: bytes) -> None:
            events.append(("header", name))

        def on_headers_complete(self) -> None:
            pass

        def on_body(self, data: bytes) -> None:
            events.append(("body", data))

        def on_message_complete(self) -> None:
            events.append(("done", b""))

    parser = FallbackParser(Sink())
    raw = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.0\r\n\r\n"
    for i in range(len(raw)):  # byte by byte
        parser.feed_data(raw[i : i + 1])
    assert [e for e in events if e[0] != "header"] == [
        ("url", b"/x"),
        ("body", b"abc"),
        ("done", b""),
        ("url", b"/y"),
        ("done", b""),
    ]
    assert parser.get_method() == b"GET" and not parser.should_keep_alive()
    with pytest.raises(ParseError):
        FallbackParser(Sink()).feed_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")


# --- integrity and devices -------------------------------------------------------------------------


def test_sha256_mismatch_of_stable_refuses_to_start(serve: Callable[..., Server], tmp_path: Path) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    stable["sha256"] = "0" * 64
    with pytest.raises(process.ServingStartError, match="sha256 mismatch"):
        serve([stable])


def test_sha256_mismatch_of_canary_rolls_it_back(serve: Callable[..., Server], tmp_path: Path) -> None:
    canary = variant(tmp_path, "canary", "4", CANARY_W)
    Path(canary["path"]).write_bytes(Path(canary["path"]).read_bytes() + b"tampered")
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W), canary], {"strategy": "canary", "steps": [50, 100]})
    client.wait_ready(srv.url, timeout=10)
    status = srv.status()
    assert status["phase"] == "rolled_back" and "sha256 mismatch" in status["reason"]
    assert status["variants"]["canary"]["state"] == "rejected"
    for _ in range(20):
        assert srv.infer([[1.0, 1.0, 1.0]])[1]["parameters"]["variant"] == "stable"


def test_device_choice() -> None:
    assert choose_providers("gpu", "cpu", [CUDA, CPU]) == ([CUDA, CPU], "gpu")
    assert choose_providers("gpu", "cpu", [CPU]) == ([CPU], "cpu")
    with pytest.raises(ModelError, match="fallback is none"):
        choose_providers("gpu", "none", [CPU])
    assert choose_providers("cpu", "none", [CUDA]) == ([CPU], "cpu")


def test_a_gpu_request_prefers_tensorrt_then_cuda_then_cpu() -> None:
    assert choose_providers("gpu", "cpu", [TRT, CUDA, CPU]) == ([TRT, CUDA, CPU], "gpu")
    assert choose_providers("gpu", "none", [CPU, CUDA, TRT]) == ([TRT, CUDA, CPU], "gpu")  # our order, not the list's
    assert choose_providers("gpu", "cpu", [TRT, CPU]) == ([TRT, CPU], "gpu")
    assert choose_providers("gpu", "cpu", ["AzureExecutionProvider", CPU]) == ([CPU], "cpu")
    assert choose_providers("cpu", "cpu", [TRT, CUDA, CPU]) == ([CPU], "cpu")  # a CPU spec never takes the GPU
    fell = plan_device("gpu", "cpu", ["AzureExecutionProvider", CPU])
    assert fell == DevicePlan(
        "gpu",
        "cpu",
        (CPU,),
        "onnxruntime has no CUDAExecutionProvider (has AzureExecutionProvider, CPUExecutionProvider)",
    )
    assert fell.fallback and not plan_device("gpu", "none", [CUDA, CPU]).fallback
    assert not plan_device("cpu", "none", [CPU]).fallback
    with pytest.raises(
        ModelError, match=r"has no CUDAExecutionProvider \(has CPUExecutionProvider\) and fallback is none"
    ):
        plan_device("gpu", "none", [CPU])


def model_bytes(tmp_path: Path) -> tuple[bytes, VariantConfig]:
    path = tmp_path / "m.onnx"
    sha = linear_onnx(path, STABLE_W)
    return path.read_bytes(), VariantConfig("stable", "stable", "3", str(path), sha)


@pytest.mark.skipif(GPU, reason="onnxruntime has a GPU provider here: it comes up")
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_gpu_provider_that_does_not_come_up_is_a_fallback_with_its_reason(tmp_path: Path) -> None:
    """Asking the real CPU-only onnxruntime for CUDA anyway: the session comes up without it, and we say so."""
    data, variant_config = model_bytes(tmp_path)
    asked = DevicePlan("gpu", "gpu", (CUDA, CPU))
    session, plan = open_session(data, ort.SessionOptions(), asked, "cpu", variant_config)
    assert session.get_providers() == [CPU]
    assert plan.device == "cpu" and plan.providers == (CPU,) and plan.fallback
    assert plan.fallback_reason == "CUDA provider failed to initialise (the session has only CPUExecutionProvider)"
    with pytest.raises(ModelError, match=r"stable: the CUDA provider failed to initialise .*; fallback is none"):
        open_session(data, ort.SessionOptions(), asked, "none", variant_config)


class FlakyProviders:
    """Stands in for onnxruntime.InferenceSession: the providers named in ``broken`` raise as a GPU provider does
    when its libraries or device are missing (onnxruntime's own CPU retry is off: enable_fallback=0)."""

    broken: tuple[str, ...] = ()
    calls: list[list[str]] = []

    def __init__(self, data: bytes, sess_options: Any, providers: list[str], enable_fallback: int) -> None:
        assert enable_fallback == 0
        FlakyProviders.calls.append(list(providers))
        if providers[0] in self.broken:
            raise RuntimeError(f"{providers[0]}: libcudart.so.12: cannot open shared object file\nmore detail")
        self.providers = providers

    def get_providers(self) -> list[str]:
        return self.providers


def test_a_provider_that_fails_to_initialise_gives_way_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, variant_config = model_bytes(tmp_path)
    monkeypatch.setattr(models.ort, "InferenceSession", FlakyProviders)
    plan = DevicePlan("gpu", "gpu", (TRT, CUDA, CPU))

    FlakyProviders.broken, FlakyProviders.calls = (TRT,), []
    _, used = open_session(data, None, plan, "none", variant_config)
    assert used == DevicePlan("gpu", "gpu", (CUDA, CPU)) and FlakyProviders.calls == [[TRT, CUDA, CPU], [CUDA, CPU]]

    FlakyProviders.broken, FlakyProviders.calls = (TRT, CUDA), []
    _, used = open_session(data, None, plan, "cpu", variant_config)
    assert used.device == "cpu" and used.providers == (CPU,) and used.fallback
    assert used.fallback_reason == (
        "CUDA provider failed to initialise: CUDAExecutionProvider: libcudart.so.12: cannot open shared object file"
    )
    assert FlakyProviders.calls == [[TRT, CUDA, CPU], [CUDA, CPU], [CPU]]

    with pytest.raises(
        ModelError, match=r"variant stable: the CUDA provider failed to initialise: .*; fallback is none"
    ):
        open_session(data, None, plan, "none", variant_config)


def test_a_gpu_request_serves_and_says_where_it_runs(serve: Callable[..., Server], tmp_path: Path) -> None:
    """device: gpu, fallback: cpu. Without a GPU provider (this machine) it serves on CPU and every view says it fell
    back and why; with one it serves on the GPU and says so."""
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], device="gpu", fallback="cpu")
    status, answer = srv.infer([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    assert status == 200 and answer["outputs"][0]["data"] == pytest.approx([14.0, 3.0])

    rollout = srv.status()["variants"]["stable"]
    code, health = srv.request("GET", "/v2/health/ready")
    meta = srv.request("GET", "/v2/models/fraud-api")[1]["parameters"]
    written = json.loads((tmp_path / "rollout.json").read_text())["variants"]["stable"]
    views = [rollout, health["devices"]["stable"], meta["variants"][0], written]
    keys = ("device", "requested_device", "providers", "fallback", "fallback_reason")
    assert code == 200 and all({k: view[k] for k in keys} == {k: rollout[k] for k in keys} for view in views)
    assert rollout["requested_device"] == "gpu" and meta["device"] == rollout["device"]
    text = srv.metrics()
    if GPU:
        assert rollout["device"] == "gpu" and not rollout["fallback"] and rollout["fallback_reason"] == ""
        assert rollout["providers"][0] in (TRT, CUDA) and rollout["providers"][-1] == CPU
        assert srv.metric("mlspec_device_fallback", variant="stable", requested="gpu", device="gpu") == 0
        return
    reason = f"onnxruntime has no CUDAExecutionProvider (has {', '.join(ort.get_available_providers())})"
    assert rollout["device"] == "cpu" and rollout["providers"] == [CPU]
    assert rollout["fallback"] is True and rollout["fallback_reason"] == reason
    assert (
        'mlspec_device_fallback{deployment="fraud-api",variant="stable",requested="gpu",device="cpu",'
        f'reason="{reason}"}} 1' in text
    )
    assert (
        'mlspec_model_info{deployment="fraud-api",variant="stable",version="3",alias="stable",device="cpu",'
        'requested="gpu",providers="CPUExecutionProvider"} 1' in text
    )
    assert "# TYPE mlspec_device_fallback gauge" in text
    assert f"device gpu asked for, but {reason}; falling back to cpu" in srv.log.read_text()


def test_a_cpu_request_is_no_fallback(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    stable = srv.status()["variants"]["stable"]
    assert (stable["device"], stable["requested_device"], stable["providers"]) == ("cpu", "cpu", [CPU])
    assert stable["fallback"] is False and stable["fallback_reason"] == ""
    assert srv.metric("mlspec_device_fallback", variant="stable", requested="cpu", device="cpu", reason="") == 0


def test_fallback_none_without_a_gpu_refuses_to_start_and_says_why(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    if GPU:  # a GPU provider is there: fallback none is no obstacle
        srv = serve([stable], device="gpu", fallback="none")
        assert srv.status()["variants"]["stable"]["device"] == "gpu"
        return
    with pytest.raises(process.ServingStartError, match="fallback is none"):
        serve([stable], device="gpu", fallback="none")
    # the server process itself, as a user or the engine runs it: exit 1, one clear line, no traceback
    config = {
        "deployment": "fraud-api", "model_name": "fraud-detector", "port": 0, "device": "gpu", "fallback": "none",
        "features": FEATURES, "variants": [stable], "rollout": {"strategy": "direct"},
    }  # fmt: skip
    path = tmp_path / "none.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "mlspec.serving", "--config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout
    have = ", ".join(ort.get_available_providers())
    assert (
        "cannot start: no variant can serve: variant stable: device: gpu asked for, but onnxruntime has no "
        f"CUDAExecutionProvider (has {have}) and fallback is none"
    ) in done.stderr


def test_mlspec_status_shows_the_device_and_the_fallback(tmp_path: Path) -> None:
    """What `mlspec status` prints (text and JSON) for a real server asked for a GPU, through ServingEngine.status."""
    from mlspec.app.operations import PlatformStatus
    from mlspec.targets.local.paths import LocalPaths
    from mlspec.targets.local.serving import ServingEngine
    from mlspec.views.platform_text import render_status_text, status_json
    from mlspec.views.style import Style

    engine = ServingEngine(LocalPaths("local", tmp_path, tmp_path / "data"), registry=None)  # type: ignore[arg-type]
    folder = engine.folder("fraud-api")
    folder.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {
        "deployment": "fraud-api", "model_name": "fraud-detector", "host": "127.0.0.1", "port": port,
        "device": "gpu", "fallback": "cpu", "features": FEATURES, "rollout": {"strategy": "direct"},
        "variants": [variant(tmp_path, "stable", "3", STABLE_W)], "status_path": str(folder / "rollout.json"),
    }  # fmt: skip
    engine.config_path("fraud-api").write_text(json.dumps(config))
    pid = process.start(engine.config_path("fraud-api"), folder / "server.log", timeout=30)
    try:
        (folder / "server.pid").write_text(str(pid))
        server = engine.status("fraud-api")
        stable = server.variants[0]
        assert server.ready and stable["requested_device"] == "gpu"
        text = render_status_text(PlatformStatus("local", None, (), (server,)), Style(False))
        data = json.loads(status_json(PlatformStatus("local", None, (), (server,))))["servers"][0]["variants"][0]
        assert {k: data[k] for k in ("device", "requested_device", "fallback", "fallback_reason")} == {
            k: stable[k] for k in ("device", "requested_device", "fallback", "fallback_reason")
        }
        if GPU:
            assert stable["device"] == "gpu" and not stable["fallback"]
            assert "device gpu (" in text and "fell back" not in text
        else:
            reason = f"onnxruntime has no CUDAExecutionProvider (has {', '.join(ort.get_available_providers())})"
            assert stable["device"] == "cpu" and stable["fallback"] is True and stable["fallback_reason"] == reason
            assert f"device cpu (gpu requested, fell back: {reason})" in text
    finally:
        process.stop(pid)
    # stopped: the status the server last wrote still says where it ran
    assert engine.status("fraud-api").variants[0]["requested_device"] == "gpu"


def test_the_gpu_serving_bench_builds_a_valid_model_and_reports_the_fallback() -> None:
    """bench/gpu_serving.py writes its ONNX MLP as protobuf by hand (the GPU machine may lack the onnx package):
    onnx's checker accepts it, onnxruntime matches the numpy reference, and the bench runs and says what it ran on."""
    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_serving.py"
    bench = runpy.run_path(str(script))
    data, weights = bench["mlp_onnx"](5, [7, 3])
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    rows = np.random.default_rng(3).normal(size=(16, 5)).astype(np.float32)
    out = ort.InferenceSession(data, providers=[CPU]).run(["score"], {"input": rows})[0]
    assert out.shape == (16, 1) and np.allclose(out, bench["numpy_mlp"](weights, rows), atol=1e-5)
    done = subprocess.run(
        [sys.executable, str(script), "--requests", "50", "--seconds", "0.2", "--hidden", "16", "--threads", "1"],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"^cpu +cpu +CPUExecutionProvider +[\d.]+ +[\d.]+ +[\d,]+$", done.stdout, re.M), done.stdout
    if GPU:
        assert re.search(r"^gpu +gpu +CUDAExecutionProvider", done.stdout, re.M) and "speed-up on GPU" in done.stdout
    else:
        assert "cuda: not available (fallback to cpu): onnxruntime has no CUDAExecutionProvider" in done.stdout


# --- traffic strategies ------------------------------------------------------------------------------


def drive(srv: Server, until: Callable[[dict[str, Any]], bool], seconds: float = 30.0) -> dict[str, Any]:
    """Send single-row requests (pipelined in groups of 50) until ``until(status)`` holds."""
    deadline, start = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        raw_requests(srv, [body([1.0, float(i % 5), 2.0], str(i)) for i in range(start, start + 50)])
        start += 50
        status = srv.status()
        if until(status):
            return status
    raise AssertionError(f"condition not reached: {srv.status()}")


def test_canary_promotes_a_good_canary(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", CANARY_W, 0.5)],
        {"strategy": "canary", "steps": [20, 60, 100],
         "analysis": {"max_error_rate": 0.01, "max_p99_ms": 5000, "min_requests": 30, "interval": "1s"}},
    )  # fmt: skip
    client.wait_ready(srv.url, timeout=10)
    first = srv.status()
    assert first["phase"] == "progressing" and first["weights"] == {"stable": 80.0, "canary": 20.0}
    seen: set[str] = set()
    for _ in range(40):
        seen.add(srv.infer([[1.0, 1.0, 1.0]])[1]["parameters"]["variant"])
    assert seen == {"stable", "canary"}
    status = drive(srv, lambda s: s["phase"] != "progressing")
    assert status["phase"] == "promoted", status
    assert status["weights"]["canary"] == 100.0 and "held at 100% for 1s" in status["reason"]
    on_disk = json.loads(Path(srv.config["status_path"]).read_text())
    assert on_disk["phase"] == "promoted" and on_disk["variants"]["canary"]["version"] == "4"
    _status_code, out = srv.infer([[1.0, 2.0, 3.0]])
    assert out["parameters"]["variant"] == "canary" and out["outputs"][0]["data"] == pytest.approx([6.5])


def test_a_load_test_cannot_promote_a_canary_before_its_interval(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", CANARY_W)],
        {"strategy": "canary", "steps": [10, 100], "analysis": {"min_requests": 20, "max_p99_ms": 5000, "interval": "5m"}},
    )  # fmt: skip
    client.wait_ready(srv.url, timeout=10)
    for start in range(0, 2000, 50):  # far more than min_requests canary requests, all healthy
        raw_requests(srv, [body([1.0, 1.0, 1.0], str(i)) for i in range(start, start + 50)])
    status = srv.status()
    assert status["phase"] == "progressing" and status["weights"]["canary"] == 10.0, status
    assert status["step"] == 0 and status["step_requests"] >= 20 and "judged again after 5m" in status["reason"]


def test_only_traffic_the_rollout_routed_is_judged(serve: Callable[..., Server], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-0123456789abcdef\n")
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", CANARY_W)],
        {"strategy": "canary", "steps": [10, 100], "analysis": {"min_requests": 20, "max_p99_ms": 5000, "interval": "1s"}},
        auth={"method": "api_key", "api_key_file": str(keys)},
    )  # fmt: skip
    client.wait_ready(srv.url, timeout=10)
    pinned = "/v2/models/fraud-api/versions/4/infer"
    key = {"X-API-Key": "k-0123456789abcdef"}
    for _ in range(60):  # direct calls to the canary's version: answered, never judged
        assert srv.request("POST", pinned, infer_body([[1.0, 1.0, 1.0]]), key)[0] == 200
    for _ in range(60):  # callers without credentials never reach the model
        assert srv.request("POST", "/v2/models/fraud-api/infer", infer_body([[1.0, 1.0, 1.0]]))[0] == 401
    code, status = srv.request("GET", "/v2/models/fraud-api/rollout", headers=key)
    assert code == 200 and status["window"]["requests"] == 0 and status["step_requests"] == 0, status
    assert status["phase"] == "progressing" and status["weights"]["canary"] == 10.0
    assert srv.metric("mlspec_requests_total", variant="canary") == 60  # metrics are open: a scrape needs no key


def infer_body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [len(rows), 3], "datatype": "FP32", "data": rows}]}


def test_canary_with_errors_rolls_back(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", [-1.0, -1.0, -1.0], sqrt=True)],
        {"strategy": "canary", "steps": [50, 100], "analysis": {"max_error_rate": 0.01, "min_requests": 20}},
    )
    client.wait_ready(srv.url, timeout=10)
    status = drive(srv, lambda s: s["phase"] != "progressing")
    assert status["phase"] == "rolled_back"
    assert re.match(r"error rate 1\.00 > max 0\.01", status["reason"]), status["reason"]
    assert status["weights"] == {"stable": 100.0, "canary": 0.0}
    assert json.loads(Path(srv.config["status_path"]).read_text())["phase"] == "rolled_back"
    assert srv.metric("mlspec_request_errors_total", variant="canary") >= 20
    replies = raw_requests(srv, [body([1.0, 1.0, 1.0], str(i)) for i in range(50)])
    assert {r["parameters"]["variant"] for r in replies} == {"stable"}
    # the canary's NaN outputs were answered as 500 errors, never as data
    status_code, err = srv.infer([[1.0, 1.0, 1.0]], path="/v2/models/fraud-api/versions/4/infer")
    assert status_code == 500 and "NaN" in err["error"]


def test_canary_over_latency_rolls_back(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", CANARY_W)],
        {"strategy": "canary", "steps": [50, 100], "analysis": {"max_p99_ms": 0.0001, "min_requests": 20}},
    )
    client.wait_ready(srv.url, timeout=10)
    status = drive(srv, lambda s: s["phase"] != "progressing")
    assert status["phase"] == "rolled_back"
    assert re.match(r"p99 [\d.]+ ms > max 0\.0001 ms", status["reason"]), status["reason"]


def test_ab_is_sticky_and_split_by_weight(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "champion", "3", STABLE_W), variant(tmp_path, "challenger", "4", CANARY_W)],
        {"strategy": "ab", "variants": [{"alias": "champion", "weight": 70}, {"alias": "challenger", "weight": 30}],
         "sticky_key": "customer_id"},
    )  # fmt: skip
    arms: dict[str, str] = {}
    for i in range(300):
        key = f"cust-{i}"
        reply = raw_requests(
            srv,
            [
                json.dumps(
                    {
                        "parameters": {"customer_id": key},
                        "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
                    }
                ).encode()
            ],
        )[0]
        arms[key] = reply["parameters"]["variant"]
        expected = score(STABLE_W if arms[key] == "champion" else CANARY_W, [1, 2, 3])
        assert reply["outputs"][0]["data"] == pytest.approx([expected])
    share = sum(a == "champion" for a in arms.values()) / len(arms)
    assert 0.6 < share < 0.8, share
    # the same key always gets the same arm, by parameter or by header
    for key in list(arms)[:20]:
        assert srv.infer([[1, 2, 3]], parameters={"customer_id": key})[1]["parameters"]["variant"] == arms[key]
        _status, out = srv.request(
            "POST", "/v2/models/fraud-api/infer",
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
            headers={"x-sticky-key": key},
        )  # fmt: skip
        assert out["parameters"]["variant"] == arms[key]
        assert (sticky_point(key) * 100 < 70) == (arms[key] == "champion")
    assert srv.status()["phase"] == "running"
    assert srv.status()["weights"] == {"champion": 70.0, "challenger": 30.0}


def test_shadow_answers_from_stable_and_compares(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "stable", "3", [0.1, 0.1, 0.1]), variant(tmp_path, "shadow", "4", [0.1, 0.1, 0.1], 0.25)],
        {"strategy": "shadow", "challenger": "challenger", "sample": 100},
    )
    client.wait_ready(srv.url, timeout=10)
    rows = [[float(i % 4), 1.0, 0.5] for i in range(60)]
    replies = raw_requests(srv, [body(r, str(i)) for i, r in enumerate(rows)])
    assert {r["parameters"]["variant"] for r in replies} == {"stable"}
    assert [r["outputs"][0]["data"][0] for r in replies] == pytest.approx([score([0.1] * 3, r) for r in rows])
    deadline = time.monotonic() + 5
    while srv.metric("mlspec_shadow_requests_total") < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.metric("mlspec_shadow_requests_total") == 60
    assert srv.metric("mlspec_shadow_mean_abs_diff") == pytest.approx(0.25, abs=1e-5)
    stable_scores = np.array([score([0.1] * 3, r) for r in rows])
    agree = np.mean((stable_scores > 0.5) == (stable_scores + 0.25 > 0.5))
    assert srv.metric("mlspec_shadow_agreement_ratio") == pytest.approx(agree, abs=1e-6)
    status = srv.status()
    assert status["phase"] == "shadowing" and status["weights"] == {"stable": 100.0, "shadow": 0.0}


def test_blue_green_switches_to_a_healthy_green(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "green", "4", CANARY_W)],
                {"strategy": "blue_green"})  # fmt: skip
    client.wait_ready(srv.url, timeout=10)
    status = srv.status()
    assert status["phase"] == "switched" and status["weights"] == {"stable": 0.0, "green": 100.0}
    replies = raw_requests(srv, [body([1.0, 2.0, 3.0], str(i)) for i in range(20)])
    assert {r["parameters"]["variant"] for r in replies} == {"green"}
    assert json.loads(Path(srv.config["status_path"]).read_text())["phase"] == "switched"


def test_blue_green_keeps_blue_when_green_fails_smoke(serve: Callable[..., Server], tmp_path: Path) -> None:
    # sqrt(-1 * 0 - 1) is NaN for the all-zero smoke row
    green = variant(tmp_path, "green", "4", CANARY_W, bias=-1.0, sqrt=True)
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W), green], {"strategy": "blue_green"})
    client.wait_ready(srv.url, timeout=10)
    status = srv.status()
    assert status["phase"] == "rolled_back" and "smoke" in status["reason"]
    replies = raw_requests(srv, [body([1.0, 2.0, 3.0], str(i)) for i in range(10)])
    assert {r["parameters"]["variant"] for r in replies} == {"stable"}


# --- request log, signals, reload --------------------------------------------------------------------


def test_request_log_sampled_and_flushed_on_sigterm(serve: Callable[..., Server], tmp_path: Path) -> None:
    log_path = tmp_path / "requests.jsonl"
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)],
                log={"path": str(log_path), "sample_rate": 0.25, "enabled": True})  # fmt: skip
    rows = [[float(i), 1.0, 2.0] for i in range(800)]
    for start in range(0, 800, 100):
        raw_requests(srv, [body(r, str(start + i)) for i, r in enumerate(rows[start : start + 100])])
    os.kill(srv.pid, signal.SIGTERM)
    _, code = os.waitpid(srv.pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert 140 <= len(lines) <= 260, len(lines)  # 25% of 800, within ~4 sigma
    first = lines[0]
    assert set(first) >= {"a", "b", "c", "timestamp", "variant", "score"}
    assert first["variant"] == "stable" and first["score"] == pytest.approx(
        score(STABLE_W, [first["a"], first["b"], first["c"]])
    )
    assert "stopping" in srv.log.read_text()


def test_a_sealed_request_log_holds_no_request_in_clear_and_a_missing_key_refuses_to_start(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    from mlspec.crypto import KeyResolver
    from mlspec.runtime.drift import read_request_log

    key = tmp_path / "keys" / "local.key"
    key.parent.mkdir()
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    log_path = tmp_path / "requests.jsonl"
    sealed = {"path": str(log_path), "sample_rate": 1.0, "enabled": True, "seal_key": key.as_uri()}
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], log=sealed)
    rows = [[float(i) + 0.125, 1.0, 2.0] for i in range(50)]
    raw_requests(srv, [body(r, str(i)) for i, r in enumerate(rows)])
    os.kill(srv.pid, signal.SIGTERM)
    _, code = os.waitpid(srv.pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    raw = log_path.read_bytes()
    assert raw and b"timestamp" not in raw and b"10.125" not in raw  # sealed flushes only
    assert log_path.stat().st_mode & 0o777 == 0o600
    frame = read_request_log(log_path, ["a", "b"], keys=KeyResolver(tmp_path))
    assert sorted(frame["a"].tolist()) == [r[0] for r in rows] and set(frame["b"]) == {1.0}
    key.unlink()  # the key cannot be had: the server does not start rather than log in clear
    with pytest.raises(Exception, match="request log is sealed with"):
        serve([variant(tmp_path, "stable", "3", STABLE_W)], log=sealed)


def test_sighup_reloads_and_keeps_old_config_on_bad_sha(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    conn = srv.conn()  # a connection kept open across the reload
    assert srv.infer([[1.0, 1.0, 1.0]])[1]["outputs"][0]["data"] == pytest.approx([6.0])
    new = dict(srv.config, variants=[variant(tmp_path, "stable", "5", CANARY_W, 1.0)])
    srv.config_path.write_text(json.dumps(new))
    os.kill(srv.pid, signal.SIGHUP)
    client.wait_versions(srv.url, "fraud-api", ["5"], timeout=10)
    _status, out = srv.infer([[1.0, 1.0, 1.0]])
    assert out["model_version"] == "5" and out["outputs"][0]["data"] == pytest.approx([4.0])
    conn.request("GET", "/v2/health/ready")
    assert conn.getresponse().status == 200  # the socket and open connections survived
    # a reload whose file does not match its sha256 is refused; version 5 keeps serving
    broken = variant(tmp_path, "stable", "6", STABLE_W)
    broken["sha256"] = "f" * 64
    srv.config_path.write_text(json.dumps(dict(srv.config, variants=[broken])))
    os.kill(srv.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in srv.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "sha256 mismatch" in srv.log.read_text()
    assert srv.infer([[1.0, 1.0, 1.0]])[1]["model_version"] == "5"
    assert process.is_running(srv.pid)
    process.stop(srv.pid)
    assert not process.is_running(srv.pid)


# --- config ---------------------------------------------------------------------------------------------


def test_config_round_trip_and_errors(tmp_path: Path) -> None:
    raw = {
        "deployment": "d", "model_name": "m", "features": ["a"], "port": 8601,
        "variants": [{"name": "stable", "alias": "champion", "version": 3, "path": "/x.onnx", "sha256": "a" * 64}],
        "rollout": {"strategy": "canary", "steps": [10, 50, 100], "analysis": {"max_p99_ms": 50}},
        "log": {"path": "/r.jsonl", "sample_rate": 0.1, "enabled": True}, "status_path": "/s.json",
    }  # fmt: skip
    config = ServingConfig.from_json(json.dumps(raw))
    assert config.variants[0].version == "3" and config.strategy == "canary"
    assert ServingConfig.from_json(config.to_json()) == config
    for change, message in [
        ({"variants": []}, "at least one"),
        ({"rollout": {"strategy": "canary", "steps": [50, 10]}}, "increase"),
        ({"rollout": {"strategy": "bogus"}}, "strategy"),
        ({"device": "tpu"}, "device"),
        ({"surprise": 1}, "unknown field"),
        (
            {"rollout": {"strategy": "ab", "variants": [{"alias": "x", "weight": 50}, {"alias": "y", "weight": 50}]}},
            "names no configured variant",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            ServingConfig.from_dict({**raw, **change})
