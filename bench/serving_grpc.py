"""Benchmark: single-row latency at concurrency 1, the Open Inference Protocol over gRPC vs REST, one server, every
Python client. bench/serving.py measures the first two beside its wrk table; this entry point prints all five:

  - rest/http.client:  the JSON body over a keep-alive http.client connection (the lightest Python client)
  - grpc/stub:         the generated stub (typed fp32_contents in and out)
  - rest/tritonclient: Triton's HTTP client (tritonclient.http, JSON)
  - grpc/tritonclient: Triton's gRPC client (tritonclient.grpc: raw_input_contents in, raw_output_contents out)
  - grpc/stub ServerLive: the stub's ServerLive, no inference: what any call costs on this gRPC stack

The server (batching on, uvloop unless --pure) serves bench/serving.py's 32-64-64-4 MLP on both listeners, pinned to
CPU 0; the clients run on CPU 1, one request at a time. Prints p50, p99 and mean in microseconds per request.

Usage: python bench/serving_grpc.py [--requests 3000] [--pure]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from serving_load import on_client_cpu, python_clients, timed
from serving_servers import build_model, start_mlspec, stop


def main() -> int:
    """Start the server, time every client, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--pure", action="store_true", help="asyncio's own loop instead of uvloop (and no httptools)")
    args = parser.parse_args()
    if args.pure:
        os.environ["MLSPEC_SERVING_PURE"] = "1"
    with tempfile.TemporaryDirectory(prefix="bench-grpc-") as tmp:
        folder = Path(tmp)
        server = start_mlspec(build_model(folder), folder, "mlspec grpc", grpc=True)
        try:
            assert server.grpc is not None
            http_addr = server.url.removeprefix("http://").split("/", 1)[0]
            loop = "asyncio" if args.pure else "uvloop"
            print(f"{'client':<22} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}   (loop: {loop})")
            with on_client_cpu():
                for name, call in python_clients(http_addr, server.grpc, every=True).items():
                    run = timed(call, args.requests)
                    print(f"{name:<22} {run.p50 * 1e3:>8.0f} {run.p99 * 1e3:>8.0f} {1e6 / run.rps:>8.0f}")
        finally:
            stop(server.proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
