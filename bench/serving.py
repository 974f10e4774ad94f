"""Benchmark: mlspec's model server against Seldon MLServer 1.7.1, KServe's Python ModelServer 0.21,
`mlflow models serve` and the in-process onnxruntime floor; with auth off, API keys and OIDC; REST and gRPC.

Model: a 32-64-64-4 MLP (torch, exported to ONNX, untrained). Every server runs onnxruntime on it, one process and
one worker, pinned to CPU 0 (taskset); the load runs on CPU 1. MLServer and KServe ship no onnxruntime runtime: the
bench gives each a small one (bench/peers/), in a virtual environment of its own (bench/serving_peers.py; made on
the first run). All answer the Open Inference Protocol v2 over REST with the same body (mlflow: its own format).

All servers are started first and stay up together; each round measures every server in turn (`wrk -t1 -c{c}
-d{secs}s --latency`, single-row requests at concurrency 1, 8 and 32, then 64-row requests at concurrency 8), and
each figure is the median over the rounds. mlspec runs three times: auth off, API key (X-API-Key), and OIDC (an
RS256 bearer token verified against a JWKS served on loopback). A fourth mlspec server with its gRPC listener on
answers one request at a time from Python: the generated gRPC stub next to REST over http.client (same process,
same client CPU). Prints one table, then met / missed per target:
  - at concurrency 8: at least 5x mlflow's requests/s and at least 8,000 req/s, p99 under 10 ms
  - at concurrency 1: p50 under 0.3 ms
  - mlspec ahead of every peer (mlflow, MLServer, KServe) in req/s at concurrency 1, 8 and 32
  - with auth on (API key; OIDC), throughput at concurrency 8 within 10% of auth off

Usage: python bench/serving.py [--duration 5] [--rounds 3] [--quick] [--skip-mlflow] [--skip-peers] [--no-auth]
       [--mlspec-source DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from serving_load import WRK_MISSING, Run, median, on_client_cpu, python_clients, timed, wrk
from serving_peers import start_kserve, start_mlserver, venv_python
from serving_servers import (
    FEATURES,
    REPO,
    IdentityProvider,
    Server,
    api_key_auth,
    build_model,
    oidc_auth,
    pinning,
    start_mlflow,
    start_mlspec,
    stop,
)

CONCURRENCY = (1, 8, 32)
BATCH_ROWS, BATCH_CONC = 64, 8
AUTHED = ("mlspec +api-key", "mlspec +oidc RS256")
PEERS = ("mlflow", "mlserver 1.7.1", "kserve 0.21")
Results = dict[tuple[str, int, int], Run]  # (server, rows, concurrency) -> run


def raw_floor(model: Path, secs: float) -> tuple[float, float]:
    """In-process onnxruntime single-row calls: calls/s and microseconds per call (1 intra-op thread)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    row = np.full((1, FEATURES), 0.5, dtype=np.float32)
    for _ in range(1000):
        session.run(["score"], {"input": row})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < secs:
        for _ in range(1000):
            session.run(["score"], {"input": row})
        n += 1000
    elapsed = time.perf_counter() - start
    return n / elapsed, elapsed / n * 1e6


def start_all(
    args: argparse.Namespace, model: Path, folder: Path, idp: IdentityProvider | None, servers: list[Server]
) -> None:
    """Start every server of this run into ``servers``, one after the other (the peers' environments made first),
    so that the caller stops those already started when one fails to start."""
    peers = {} if args.skip_peers else {peer: venv_python(peer) for peer in ("mlserver", "kserve")}
    source = Path(args.mlspec_source).resolve() if args.mlspec_source else REPO / "compiler"
    servers.append(start_mlspec(model, folder, source=source))
    if idp is not None:
        servers.append(start_mlspec(model, folder, AUTHED[0], auth=api_key_auth(folder), source=source))
        servers.append(start_mlspec(model, folder, AUTHED[1], auth=oidc_auth(idp), source=source))
        servers[-2].batch = servers[-1].batch = False
    if not args.skip_mlflow:
        servers.append(start_mlflow(model, folder))
    if peers:
        servers.append(start_mlserver(peers["mlserver"], model, folder))
        servers.append(start_kserve(peers["kserve"], model, folder))


def measure(servers: list[Server], secs: int, rounds: int, batch: bool, folder: Path) -> Results:
    """Every server in turn, each round; the median of the rounds per server, rows and concurrency."""
    plan = [(1, conns) for conns in CONCURRENCY] + ([(BATCH_ROWS, BATCH_CONC)] if batch else [])
    for server in servers:  # warm-up
        for rows in (1, BATCH_ROWS) if batch and server.batch else (1,):
            wrk(server.url, server.body(rows), 8, 1, folder, headers=server.headers)
    runs: dict[tuple[str, int, int], list[Run]] = {}
    for rows, conns in plan:
        for _ in range(rounds):
            for server in servers:
                if rows == 1 or server.batch:
                    got = wrk(server.url, server.body(rows), conns, secs, folder, headers=server.headers)
                    runs.setdefault((server.name, rows, conns), []).append(got)
    return {key: median(values) for key, values in runs.items()}


def python_latency(model: Path, folder: Path, requests: int, source: Path) -> Results:
    """gRPC (generated stub) and REST (http.client) at concurrency 1 from this process, on one mlspec server."""
    server = start_mlspec(model, folder, "mlspec grpc", grpc=True, source=source)
    try:
        http_addr = server.url.removeprefix("http://").split("/", 1)[0]
        assert server.grpc is not None
        with on_client_cpu():
            calls = python_clients(http_addr, server.grpc)
            return {(f"mlspec {name} (py)", 1, 1): timed(call, requests) for name, call in calls.items()}
    finally:
        stop(server.proc)


def report(results: Results, floor: tuple[float, float], header: str) -> None:
    """The table, then met / missed per target."""
    floor_rps, floor_us = floor
    print(f"\n{header}\n")
    title = f"{'server':<28} {'rows':>4} {'conc':>5} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}"
    print(title)
    print("-" * len(title))
    for (name, rows, conns), run in sorted(results.items(), key=lambda item: (item[0][1], item[0][2])):
        print(f"{name:<28} {rows:>4} {conns:>5} {run.rps:>10,.0f} {run.p50:>9.3f} {run.p99:>9.3f}")
    calls = f"(calls/s, {floor_us:.1f} us/call)"
    print(
        f"{'onnxruntime in-process':<28} {1:>4} {'-':>5} {floor_rps:>10,.0f} {floor_us / 1000:>9.3f} {'':>9}  {calls}"
    )
    print()
    ours8, ours1 = results["mlspec", 1, 8], results["mlspec", 1, 1]

    def line(ok: bool, text: str) -> None:
        print(f"{'met' if ok else 'MISSED'}: {text}")

    if ("mlflow", 1, 8) in results:
        ratio = ours8.rps / results["mlflow", 1, 8].rps
        line(ratio >= 5, f"c=8 throughput {ours8.rps:,.0f} req/s = {ratio:.1f}x mlflow (target 5x)")
    line(ours8.rps >= 8000, f"c=8 throughput {ours8.rps:,.0f} req/s (target >= 8,000)")
    line(ours8.p99 < 10, f"c=8 p99 {ours8.p99:.2f} ms (target < 10 ms)")
    line(ours1.p50 < 0.3, f"c=1 p50 {ours1.p50:.3f} ms (target < 0.3 ms)")
    peers = [p for p in PEERS if (p, 1, 1) in results]
    for conns in CONCURRENCY if peers else ():
        ours = results["mlspec", 1, conns].rps
        theirs = ", ".join(f"{p} {results[p, 1, conns].rps:,.0f}" for p in peers)
        ahead = all(ours > results[p, 1, conns].rps for p in peers)
        line(ahead, f"c={conns} mlspec {ours:,.0f} req/s ahead of every peer ({theirs})")
    for name in AUTHED:
        if (name, 1, 8) in results:
            ratio = results[name, 1, 8].rps / ours8.rps
            text = f"c=8 {name} {results[name, 1, 8].rps:,.0f} req/s = {ratio:.0%} of auth off (target >= 90%)"
            line(ratio >= 0.9, text)
    if ("mlspec", BATCH_ROWS, BATCH_CONC) in results:
        rows = {p: results[p, BATCH_ROWS, BATCH_CONC].rps * BATCH_ROWS for p in ("mlspec", *peers)}
        text = ", ".join(f"{p} {r:,.0f}" for p, r in rows.items())
        print(f"info: {BATCH_ROWS}-row requests at c={BATCH_CONC}, rows/s: {text}")
    grpc, rest = results.get(("mlspec grpc/stub (py)", 1, 1)), results.get(("mlspec rest/http.client (py)", 1, 1))
    if grpc and rest:
        print(
            f"info: c=1 from Python, p50 gRPC (stub) {grpc.p50 * 1000:.0f} us vs REST (http.client) {rest.p50 * 1000:.0f} us"
        )
    print(
        f"info: gap of our c=1 p50 to the raw onnxruntime call: {ours1.p50 * 1000 - floor_us:.0f} us "
        f"({ours1.p50 * 1000 / floor_us:.1f}x the {floor_us:.1f} us floor)"
    )


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server and concurrency (median)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per Python client (gRPC vs REST)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, one round")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-peers", action="store_true", help="no MLServer and KServe (no venvs made)")
    parser.add_argument("--no-auth", action="store_true", help="no API-key and OIDC runs")
    parser.add_argument("--no-batch", action="store_true", help=f"no {BATCH_ROWS}-row runs")
    parser.add_argument("--mlspec-source", help="serve mlspec from this compiler/ folder (default: this checkout's)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print(WRK_MISSING)
        sys.exit(2)
    if problem := pinning():
        print(f"warning: {problem}")
    secs, rounds = (2, 1) if args.quick else (args.duration, args.rounds)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mlspec-bench-") as tmp:
        folder = Path(tmp)
        model = build_model(folder)
        with on_client_cpu():
            floor = raw_floor(model, min(secs, 3))
        idp = None if args.no_auth else IdentityProvider()
        servers: list[Server] = []
        try:
            start_all(args, model, folder, idp, servers)
            results = measure(servers, secs, rounds, not args.no_batch, folder)
        finally:
            for server in servers:
                stop(server.proc)
            if idp is not None:
                idp.close()
        source = Path(args.mlspec_source).resolve() if args.mlspec_source else REPO / "compiler"
        results |= python_latency(model, folder, args.requests, source)
    pinned = "servers pinned to CPU 0, load on CPU 1" if not pinning() else "not pinned"
    header = (
        f"32-64-64-4 MLP, wrk -t1, {secs} s per run, median of {rounds} round(s), {os.cpu_count()} CPUs, {pinned}, "
        f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after (other work shares the CPUs);\n"
        f"(py) rows: one request at a time from Python, {args.requests} requests"
    )
    report(results, floor, header)


if __name__ == "__main__":
    main()
