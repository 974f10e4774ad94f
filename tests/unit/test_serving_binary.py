"""The binary tensor data extension of the model server, end to end: Triton's own HTTP client and raw bytes against
a real server process on loopback, answers compared with onnxruntime run here."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton  # Triton's own client (a dev dependency)
from tritonclient.utils import InferenceServerException

from tests.unit.test_serving import CANARY_W, STABLE_W, Server, ort, variant
from tests.unit.test_serving import serve as serve_fixture  # noqa: F401  (pytest finds the fixture `serve` by its name)

INFER = "/v2/models/fraud-api/infer"
HEADER = "Inference-Header-Content-Length"
ROWS = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, 1.0], [-2.5, 4.0, 0.125]], dtype=np.float32)


def ort_run(path: str, rows: np.ndarray) -> np.ndarray:
    """The model's output for ``rows``, from onnxruntime in this process."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {"input": rows.astype(np.float32)})[0]
    return out


def client(srv: Server) -> Any:
    """Triton's HTTP client for ``srv`` (it takes host:port, no scheme)."""
    host, port = srv.addr
    return triton.InferenceServerClient(url=f"{host}:{port}", network_timeout=10.0)


def tensor(name: str, arr: np.ndarray, datatype: str, binary: bool) -> Any:
    """A Triton InferInput holding ``arr``, as binary tensor data or as JSON."""
    return triton.InferInput(name, list(arr.shape), datatype).set_data_from_numpy(arr, binary_data=binary)


def post(
    srv: Server, body: bytes, headers: dict[str, str] | None = None, path: str = INFER
) -> tuple[int, dict[str, str], bytes]:
    """POST raw bytes; the status, the response headers (lower-cased names) and the body."""
    conn = http.client.HTTPConnection(*srv.addr, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def binary_body(doc: dict[str, Any], *tensors: bytes) -> tuple[bytes, dict[str, str]]:
    """A body of JSON inference header ``doc`` and raw ``tensors``, and the header saying where the JSON ends."""
    head = json.dumps(doc).encode()
    return head + b"".join(tensors), {HEADER: str(len(head))}


def error_of(srv: Server, body: bytes, headers: dict[str, str] | None = None) -> str:
    """The error message of a request that must be refused with 400 (a JSON body, never a 500)."""
    status, reply_headers, data = post(srv, body, headers)
    assert status == 400, (status, data)
    assert reply_headers["content-type"] == "application/json"
    return str(json.loads(data)["error"])


def test_triton_client_json_and_binary_inputs_and_outputs(serve: Callable[..., Server], tmp_path: Path) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable])
    expected = ort_run(stable["path"], ROWS)
    with client(srv) as tc:
        assert tc.is_server_live() and tc.is_server_ready() and tc.is_model_ready("fraud-api")
        meta = tc.get_server_metadata()
        assert meta["name"] == "mlspec" and "binary_tensor_data" in meta["extensions"]
        assert tc.get_model_metadata("fraud-api")["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
        for inputs_binary, output_binary in ((False, False), (True, None), (True, True), (False, True), (True, False)):
            outputs = None if output_binary is None else [triton.InferRequestedOutput("score", output_binary)]
            result = tc.infer(
                "fraud-api", [tensor("input", ROWS, "FP32", inputs_binary)], outputs=outputs, request_id="r-1"
            )
            case = (inputs_binary, output_binary)
            out = result.get_output("score")
            binary_answer = output_binary is not False  # no outputs named: the client asks for binary_data_output
            assert ("data" in out) is not binary_answer, case
            if binary_answer:
                assert out["parameters"] == {"binary_data_size": expected.size * 4}, case
            assert result.as_numpy("score").dtype == np.float32, case
            np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-6, err_msg=str(case))
            response = result.get_response()
            assert response["id"] == "r-1" and response["model_version"] == "3", case
            assert response["parameters"] == {"variant": "stable"}, case
        # a pinned version, and an unknown output refused with a message naming it
        pinned = tc.infer("fraud-api", [tensor("input", ROWS, "FP32", True)], model_version="3")
        np.testing.assert_allclose(pinned.as_numpy("score"), expected, rtol=1e-6)
        with pytest.raises(InferenceServerException, match=r"unknown output\(s\) 'proba'.*'score'") as refused:
            tc.infer(
                "fraud-api",
                [tensor("input", ROWS, "FP32", True)],
                outputs=[triton.InferRequestedOutput("proba")],
            )
        assert refused.value.status() == "400"


def test_binary_answer_on_the_wire(serve: Callable[..., Server], tmp_path: Path) -> None:
    """The raw response: octet-stream, Inference-Header-Content-Length, the JSON header then the FP32 bytes."""
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable])
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor("input", ROWS, "FP32", True)])
    assert json_size is not None and len(body) == json_size + ROWS.nbytes
    status, headers, data = post(srv, body, {HEADER: str(json_size)})
    assert status == 200, data
    assert headers["content-type"] == "application/octet-stream"
    length = int(headers[HEADER.lower()])
    head = json.loads(data[:length])
    assert head["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [3, 1], "parameters": {"binary_data_size": 12}}
    ]
    assert len(data) == length + 12
    np.testing.assert_allclose(
        np.frombuffer(data[length:], "<f4").reshape(3, 1), ort_run(stable["path"], ROWS), rtol=1e-6
    )
    # a plain JSON request without binary outputs is answered in JSON as before
    status, headers, data = post(srv, json.dumps({"inputs": [{"name": "input", "shape": [3, 3],
                                 "datatype": "FP32", "data": ROWS.tolist()}]}).encode())  # fmt: skip
    assert status == 200 and headers["content-type"] == "application/json" and HEADER.lower() not in headers
    assert json.loads(data)["outputs"][0]["data"] == pytest.approx(ort_run(stable["path"], ROWS).ravel().tolist())


def test_per_feature_binary_inputs_keep_their_datatypes(serve: Callable[..., Server], tmp_path: Path) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable])
    n = 4
    columns: dict[str, tuple[np.ndarray, str]] = {
        "a": (np.array([0.5, -1.25, 3.0, 7.5], dtype=np.float64), "FP64"),
        "b": (np.array([[2], [-3], [40], [1]], dtype=np.int64), "INT64"),
        "c": (np.array([True, False, True, True]), "BOOL"),
    }
    rows = np.stack([columns[f][0].reshape(n).astype(np.float32) for f in ("a", "b", "c")], axis=1)
    expected = ort_run(stable["path"], rows)
    variants: list[dict[str, tuple[np.ndarray, str]]] = [
        columns,
        {
            "a": (columns["a"][0].astype(np.float16), "FP16"),
            "b": (columns["b"][0].astype(np.int32), "INT32"),
            "c": (columns["c"][0].astype(np.uint8), "UINT8"),
        },
        {"a": (columns["a"][0].astype(np.float32), "FP32"), "b": (columns["b"][0].astype(np.int16), "INT16"),
         "c": (columns["c"][0].astype(np.int8), "INT8")},
    ]  # fmt: skip
    with client(srv) as tc:
        for index, chosen in enumerate(variants):
            # the feature order of the request differs from the model's; one input goes as JSON among binary ones
            inputs = [tensor(name, *chosen[name], binary=name != "b") for name in ("c", "a", "b")]
            result = tc.infer("fraud-api", inputs)
            np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-3, err_msg=str(index))
        # every input binary, decoded exactly (FP64 and INT64 values become the float32 rows the JSON path makes)
        inputs = [tensor(name, *columns[name], binary=True) for name in ("a", "b", "c")]
        np.testing.assert_allclose(tc.infer("fraud-api", inputs).as_numpy("score"), expected, rtol=1e-6)


def read_responses(sock: socket.socket, count: int) -> list[tuple[dict[str, str], bytes]]:
    """Read ``count`` HTTP responses (Content-Length bodies) from ``sock``: their headers and bodies."""
    buffer = b""
    replies: list[tuple[dict[str, str], bytes]] = []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        buffer += chunk
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            lines = buffer[:end].decode("latin-1").split("\r\n")[1:]
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            length = int(headers["content-length"])
            if len(buffer) < end + 4 + length:
                break
            replies.append((headers, buffer[end + 4 : end + 4 + length]))
            buffer = buffer[end + 4 + length :]
    return replies


def test_pipelined_binary_requests_are_batched_in_order_and_logged(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log_path = tmp_path / "requests.jsonl"
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable], log={"path": str(log_path), "sample_rate": 1.0, "enabled": True})
    rows = np.array([[float(i), float(i % 5), -i / 4] for i in range(30)], dtype=np.float32)
    payload = b""
    for i, row in enumerate(rows):
        inputs = [tensor("input", row.reshape(1, 3), "FP32", True)]
        body, json_size = triton.InferenceServerClient.generate_request_body(inputs, request_id=f"r{i}")
        payload += b"POST %s HTTP/1.1\r\nHost: x\r\n%s: %d\r\nContent-Length: %d\r\n\r\n%s" % (
            INFER.encode(), HEADER.encode(), json_size, len(body), body
        )  # fmt: skip
    with socket.create_connection(srv.addr, timeout=10) as sock:
        sock.sendall(payload)  # one write: the requests reach the server in one read and are batched
        replies = read_responses(sock, len(rows))
    expected = ort_run(stable["path"], rows).ravel()
    for i, (headers, data) in enumerate(replies):
        result = triton.InferenceServerClient.parse_response_body(data, header_length=int(headers[HEADER.lower()]))
        assert result.get_response()["id"] == f"r{i}"
        assert result.as_numpy("score").ravel().tolist() == pytest.approx([expected[i]], rel=1e-6)
    assert 0 < srv.metric("mlspec_batch_size_rows_count", variant="stable") < len(rows)
    assert srv.metric("mlspec_batch_size_rows_sum", variant="stable") == len(rows)
    os.kill(srv.pid, signal.SIGTERM)  # flushes the request log
    _, code = os.waitpid(srv.pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    logged = sorted(map(json.loads, log_path.read_text().splitlines()), key=lambda r: r["a"])
    assert [[r["a"], r["b"], r["c"]] for r in logged] == rows.tolist()  # the rows the binary bytes held, exactly
    assert [r["score"] for r in logged] == pytest.approx(expected.tolist(), rel=1e-6)
    assert {r["variant"] for r in logged} == {"stable"}


def test_binary_requests_follow_the_rollout_and_non_finite_outputs_stay_errors(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", [-1.0, -1.0, -1.0], sqrt=True)],
        {"strategy": "canary", "steps": [50, 100], "analysis": {"max_error_rate": 0.01, "min_requests": 10}},
    )
    row = np.array([[1.0, 1.0, 1.0]], dtype=np.float32)
    answered: list[str] = []
    failed: list[str] = []
    with client(srv) as tc:
        # sqrt of a negative score is NaN: refused with 500 as in JSON, never sent as binary data
        with pytest.raises(InferenceServerException, match="NaN") as refused:
            tc.infer("fraud-api", [tensor("input", row, "FP32", True)], model_version="4")
        assert refused.value.status() == "500"
        for _ in range(300):
            try:
                result = tc.infer("fraud-api", [tensor("input", row, "FP32", True)])
            except InferenceServerException as exc:  # the canary's NaN answers
                failed.append(str(exc.status()))
            else:
                answered.append(result.get_response()["parameters"]["variant"])
                assert result.as_numpy("score").tolist() == [[6.0]]
            if srv.status()["phase"] != "progressing":
                break
    status = srv.status()
    assert status["phase"] == "rolled_back" and "error rate" in status["reason"], status
    assert set(answered) == {"stable"} and set(failed) == {"500"}
    assert srv.metric("mlspec_request_errors_total", variant="canary") >= 10


def test_malformed_binary_bodies_are_refused_with_what_is_wrong(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", CANARY_W)])
    six = np.arange(6, dtype=np.float32).tobytes()
    good_doc = {
        "inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}]
    }
    body, headers = binary_body(good_doc, six)
    status, _headers, data = post(srv, body, headers, INFER)
    assert status == 200  # the well-formed request the broken ones below are made from
    for header_value, message in (
        ("twelve", f"{HEADER} must be the byte length"),
        ("-5", f"{HEADER} must be the byte length"),
        (str(len(body) + 1), f"{HEADER} is {len(body) + 1} bytes but the whole request body is {len(body)} bytes"),
        (str(len(body) - 30), "the JSON inference header (the first"),  # the header cut inside the JSON
    ):
        assert message in error_of(srv, body, {HEADER: header_value}), header_value

    def refused(doc: dict[str, Any], *tensors: bytes) -> str:
        return error_of(srv, *binary_body(doc, *tensors))

    def one(**fields: Any) -> dict[str, Any]:
        return {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", **fields}]}

    assert "add up to 24 bytes (input 'input' 24) but 20 bytes follow" in refused(good_doc, six[:20])
    assert "add up to 24 bytes (input 'input' 24) but 28 bytes follow" in refused(good_doc, six + b"\0" * 4)
    assert "add up to 0 bytes (no input declares any) but 24 bytes follow" in refused(
        {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [0] * 6}]}, six
    )
    assert "binary_data_size is 20 bytes, but shape [2, 3] of FP32 (4 byte(s) each) takes 24 bytes" in refused(
        one(parameters={"binary_data_size": 20}), six[:20]
    )
    assert "INT64 (8 byte(s) each) takes 48 bytes" in refused(
        one(datatype="INT64", parameters={"binary_data_size": 24}), six
    )
    bytes_error = refused(one(datatype="BYTES", parameters={"binary_data_size": 24}), six)
    assert "datatype 'BYTES'" in bytes_error and "numeric datatype" in bytes_error
    assert "datatype 'BF16'" in refused(one(datatype="BF16", parameters={"binary_data_size": 24}), six)
    assert "binary_data_size must be a non-negative byte count, not -24" in refused(
        one(parameters={"binary_data_size": -24}), six
    )
    assert "binary_data_size must be a non-negative byte count, not '24'" in refused(
        one(parameters={"binary_data_size": "24"}), six
    )
    assert "has both 'data' and parameters.binary_data_size" in refused(
        one(data=[0] * 6, parameters={"binary_data_size": 24}), six
    )
    assert "datatype 'FP64'; this model takes FP32" in refused(
        one(datatype="FP64", parameters={"binary_data_size": 48}), six + six
    )
    assert "shape [2, 4]; this model takes [N, 3]" in refused(
        one(shape=[2, 4], parameters={"binary_data_size": 32}), six + six[:8]
    )
    assert "'shape' must be a list of non-negative integers" in refused(
        one(shape=[2, -3], parameters={"binary_data_size": 24}), six
    )
    assert "unknown output(s) 'nope'" in refused({**good_doc, "outputs": [{"name": "nope"}]}, six)
    assert "binary_data_output must be true or false, not 'yes'" in refused(
        {**good_doc, "parameters": {"binary_data_output": "yes"}}, six
    )
    assert "request body needs a non-empty 'inputs' list" in refused({"inputs": []})
    per_feature = {"inputs": [{"name": f, "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
                              for f in ("a", "b")]}  # fmt: skip
    assert "missing feature input(s): c" in refused(per_feature, six[:4], six[4:8])
    # binary data without the header is not called bad JSON without saying what is missing
    assert f"needs the {HEADER} header" in error_of(srv, body)
    missing = error_of(srv, json.dumps(good_doc).encode())
    assert "binary_data_size" in missing and f"needs the {HEADER} header" in missing
    # a plain JSON body that is not JSON still says so, and nothing else
    plain = error_of(srv, b"{not json")
    assert plain.startswith("request body is not valid JSON") and HEADER not in plain
    assert srv.metric("mlspec_http_responses_total", code="500") == 0
    assert srv.metric("mlspec_http_responses_total", code="400") >= 20
    status, _headers, data = post(srv, body, headers, INFER)  # the server still answers
    assert status == 200 and re.search(rb'"binary_data_size"', data) is None  # JSON answer: no binary output asked
