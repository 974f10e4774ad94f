"""Benchmark: mlspec's model server against `mlflow models serve` and the in-process onnxruntime floor.

Model: a 32-64-64-4 MLP (torch, exported to ONNX, untrained), single-row requests on loopback, load from
`wrk -t1 -c{c} -d{secs}s --latency` at concurrency 1, 8 and 32. Prints one table, then met / missed per target:
  - at concurrency 8: at least 5x mlflow's requests/s and at least 8,000 req/s, p99 under 10 ms
  - at concurrency 1: p50 under 0.3 ms

Usage: python bench/serving.py [--duration 5] [--quick] [--skip-mlflow]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FEATURES = 32
BODY_OIP = {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": [0.5] * FEATURES}]}
BODY_MLFLOW = {"inputs": [[0.5] * FEATURES]}


def build_model(folder: Path) -> Path:
    """Export the untrained 32-64-64-4 MLP to ONNX."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 4),
        torch.nn.Sigmoid(),
    ).eval()
    path = folder / "mlp.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, FEATURES),),
        str(path),
        input_names=["input"],
        output_names=["score"],
        dynamic_axes={"input": {0: "batch"}, "score": {0: "batch"}},
        dynamo=False,
    )
    return path


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url`` answers 200; exit with the log's tail when the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def wrk(url: str, body: dict[str, object], conns: int, secs: int, folder: Path) -> tuple[float, float, float]:
    """req/s, p50 ms and p99 ms from one wrk run POSTing ``body``."""
    script = folder / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        sys.exit(f"wrk saw error responses from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, _ms(out, "50%"), _ms(out, "99%")


def _ms(out: str, pct: str) -> float:
    match = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out)
    assert match, out
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


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


def start_mlspec(model: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start mlspec's server (direct rollout, batching on) on a free port."""
    port = free_port()
    config = {
        "deployment": "bench",
        "model_name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "device": "cpu",
        "fallback": "cpu",
        "batching": True,
        "features": [f"f{i}" for i in range(FEATURES)],
        "variants": [
            {
                "name": "stable",
                "alias": "champion",
                "version": "1",
                "path": str(model),
                "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            }
        ],
        "rollout": {"strategy": "direct"},
        "log": None,
        "status_path": str(folder / "rollout.json"),
    }
    (folder / "serving.json").write_text(json.dumps(config))
    log = folder / "mlspec.log"
    env = dict(os.environ, PYTHONPATH=str(REPO / "compiler"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlspec.serving", "--config", str(folder / "serving.json"), "--log-level", "WARNING"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/health/ready", 60, proc, log)
    return proc, f"{base}/v2/models/bench/infer", log


def start_mlflow(model: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Log the ONNX model to a temporary SQLite tracking store and `mlflow models serve` it (1 worker)."""
    import mlflow
    import onnx

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = mlflow.create_experiment("bench", artifact_location=(folder / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.onnx.log_model(onnx.load(str(model)), name="model")
    port = free_port()
    log = folder / "mlflow.log"
    bin_dir = Path(sys.executable).parent  # mlflow runs uvicorn from PATH
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    mlflow_bin = bin_dir / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            info.model_uri,
            "--env-manager",
            "local",
            "--workers",
            "1",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/ping", 120, proc, log)
    return proc, f"{base}/invocations", log


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server (its whole process group for mlflow's gunicorn/uvicorn)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM) if os.getpgid(proc.pid) == proc.pid else proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="2 s runs")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get install wrk  (or brew install wrk)")
        sys.exit(2)
    secs = 2 if args.quick else args.duration
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="mlspec-bench-") as tmp:
        folder = Path(tmp)
        model = build_model(folder)
        floor_rps, floor_us = raw_floor(model, min(secs, 3))
        targets = [("mlspec", start_mlspec)] + ([] if args.skip_mlflow else [("mlflow", start_mlflow)])
        for name, starter in targets:
            proc, url, _log = starter(model, folder)
            body = BODY_MLFLOW if name == "mlflow" else BODY_OIP
            try:
                wrk(url, body, 8, 1, folder)  # warm-up
                for conns in (1, 8, 32):
                    results[name, conns] = wrk(url, body, conns, secs, folder)
            finally:
                stop(proc)
    print(f"\nsingle-row requests, 32-64-64-4 MLP, wrk -t1, {secs} s per run, {os.cpu_count()} CPUs\n")
    header = f"{'server':<26} {'conc':>5} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}"
    print(header)
    print("-" * len(header))
    for (name, conns), (rps, p50, p99) in results.items():
        print(f"{name:<26} {conns:>5} {rps:>10,.0f} {p50:>9.3f} {p99:>9.3f}")
    print(
        f"{'onnxruntime in-process':<26} {'-':>5} {floor_rps:>10,.0f} {floor_us / 1000:>9.3f} {'':>9}  (calls/s, {floor_us:.1f} us/call)"
    )
    ours8, ours1 = results["mlspec", 8], results["mlspec", 1]
    print()
    if ("mlflow", 8) in results:
        ratio = ours8[0] / results["mlflow", 8][0]
        print(
            f"{'met' if ratio >= 5 else 'MISSED'}: c=8 throughput {ours8[0]:,.0f} req/s = {ratio:.1f}x mlflow (target 5x)"
        )
    print(f"{'met' if ours8[0] >= 8000 else 'MISSED'}: c=8 throughput {ours8[0]:,.0f} req/s (target >= 8,000)")
    print(f"{'met' if ours8[2] < 10 else 'MISSED'}: c=8 p99 {ours8[2]:.2f} ms (target < 10 ms)")
    print(f"{'met' if ours1[1] < 0.3 else 'MISSED'}: c=1 p50 {ours1[1]:.3f} ms (target < 0.3 ms)")
    print(
        f"gap of our c=1 p50 to the raw onnxruntime call: {ours1[1] * 1000 - floor_us:.0f} us "
        f"({ours1[1] * 1000 / floor_us:.1f}x the {floor_us:.1f} us floor)"
    )


if __name__ == "__main__":
    main()
