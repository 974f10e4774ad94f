"""A client cannot take the server down by holding it: a request sent too slowly gets 408, a silent kept-alive
connection is closed, and connections beyond the limit are refused, while everyone else is served."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from mlspec.serving.http import Limits, sweep
from tests.unit.test_serving import STABLE_W, Server, variant

LIMITS = {"request_timeout": 0.6, "idle_timeout": 1.0, "max_connections": 8}


def read_all(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the server did not close the connection within {limit} s") from None
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_a_slow_request_gets_408_and_a_silent_connection_is_closed(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], **LIMITS)
    slow = socket.create_connection(srv.addr)
    slow.sendall(b"POST /v2/models/fraud-api/infer HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
    answer = read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 0.6 s" in answer
    idle = socket.create_connection(srv.addr)  # connects and says nothing
    assert read_all(idle) == b""
    # the server still answers everyone else
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 200
    assert "past their time limits" in srv.log.read_text()


def test_connections_beyond_the_limit_are_refused_not_queued(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], **{**LIMITS, "idle_timeout": 30.0})
    held = [socket.create_connection(srv.addr) for _ in range(8)]
    for sock in held:  # each is a real, kept-alive client
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2, 3]]}]})
        sock.sendall(
            f"POST /v2/models/fraud-api/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    extra = socket.create_connection(srv.addr)
    refused = read_all(extra)
    assert refused.startswith(b"HTTP/1.1 503 ") and b"8 connections already" in refused
    held.pop().close()
    served, deadline = False, time.monotonic() + 10
    while not served and time.monotonic() < deadline:  # a slot frees when a client leaves
        again = socket.create_connection(srv.addr)
        again.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        served = read_all(again).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.05)
    assert served
    for sock in held:
        sock.close()


class FakeConnection:
    def __init__(self, started: float | None, seen: float, pending: bool = False) -> None:
        self.request_started, self.last_seen = started, seen
        self.lingering = None
        self.queue = [object()] if pending else []
        self.events: list[str] = []

    def time_out(self) -> None:
        self.events.append("408")

    def close_when_idle(self) -> None:
        self.events.append("closed")


def test_the_sweep_never_cuts_a_connection_the_server_owes_an_answer() -> None:
    limits = Limits(max_connections=10, request_timeout=5, idle_timeout=10)
    slow, idle, waiting, fresh = (FakeConnection(0.0, 0.0), FakeConnection(None, 0.0),
                                  FakeConnection(0.0, 0.0, pending=True), FakeConnection(98.0, 99.0))  # fmt: skip
    assert sweep({slow, idle, waiting, fresh}, limits, now=100.0) == 2  # type: ignore[arg-type]
    assert (slow.events, idle.events, waiting.events, fresh.events) == (["408"], ["closed"], [], [])


def test_an_endless_request_line_or_too_many_headers_is_cut_not_buffered(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)])
    endless = socket.create_connection(srv.addr)
    endless.sendall(b"GET /" + b"a" * 70_000)  # a request line that has not ended after 70 KB
    answer = read_all(endless)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"over 65536 bytes" in answer
    crowded = socket.create_connection(srv.addr)
    headers = "".join(f"X-H{i}: v\r\n" for i in range(101))
    crowded.sendall(f"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    answer = read_all(crowded)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"more than 100 header fields" in answer
    # many small pipelined requests in one write are not a long head
    pipelined = socket.create_connection(srv.addr)
    pipelined.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
    pipelined.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_all(pipelined).count(b"HTTP/1.1 200 ") == 2001
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 200


def rss_mb(pid: int) -> float:
    """The process's resident memory (MiB), from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


def flood(addr: tuple[str, int], connections: int, megabytes: int) -> list[socket.socket]:
    """``connections`` clients each sending ``megabytes`` of a much longer body, then holding on."""
    held = []
    for _ in range(connections):
        sock = socket.create_connection(addr)
        sock.sendall(b"POST /v2/models/fraud-api/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n")
        held.append(sock)
    chunk = b"[1.0," * 13107  # 64 KiB
    for _ in range(megabytes * 16):
        for sock in held:
            sock.sendall(chunk)
    return held


def health(addr: tuple[str, int]) -> bytes:
    probe = socket.create_connection(addr)
    probe.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return read_all(probe)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads resident memory from /proc")
def test_memory_taken_by_a_flood_of_bodies_returns_and_health_answers_during_it(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], max_connections=64, request_timeout=120.0)
    baseline = rss_mb(srv.pid)
    held = flood(srv.addr, 40, 3)  # 120 MiB of request bodies that will never complete
    slow = [socket.create_connection(srv.addr) for _ in range(16)]  # and heads sent one byte at a time
    for sock in slow:
        sock.sendall(b"G")
    deadline = time.monotonic() + 30
    while rss_mb(srv.pid) < baseline + 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    during = rss_mb(srv.pid)
    assert during > baseline + 100, (baseline, during)  # the bodies are held, as they should be while read
    assert health(srv.addr).startswith(b"HTTP/1.1 200 "), "health answers while the flood holds the server"
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 200
    for sock in held + slow:
        sock.close()
    deadline = time.monotonic() + 30
    while rss_mb(srv.pid) > baseline + (during - baseline) / 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = rss_mb(srv.pid)
    assert after <= baseline + (during - baseline) / 4, (baseline, during, after)
    deadline = time.monotonic() + 10  # the once-a-second sweep also hands freed heap pages back to the system
    while "freed memory returned" not in srv.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "freed memory returned" in srv.log.read_text()


def test_bodies_beyond_the_servers_buffer_budget_are_refused_and_the_rest_served(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], max_buffered=4 * 1024 * 1024, request_timeout=120.0)
    held = flood(srv.addr, 3, 1)  # 3 MiB of the 4 MiB budget
    greedy = flood(srv.addr, 1, 2)[0]  # this one crosses it
    refused = read_all(greedy)
    assert refused.startswith(b"HTTP/1.1 503 ") and b"bytes of request bodies already" in refused
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 200, "small requests are still served"
    for sock in held:
        sock.close()
