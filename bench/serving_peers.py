"""The peer model servers of bench/serving.py: Seldon MLServer 1.7.1 and KServe's Python ModelServer 0.21.

Both conflict with the project's pins, so each lives in its own virtual environment under
``~/.cache/mlspec-bench/venvs/<peer>`` (``$XDG_CACHE_HOME`` respected), made on first use with ``python -m venv``
and pip, and reused while its requirements are unchanged. Neither ships an onnxruntime runtime: bench/peers/ holds
a small one for each (an MLServer ``MLModel`` and a ``kserve.Model``), with mlspec's session options and the
project's onnxruntime version. Both answer the Open Inference Protocol v2 over REST, one process, one worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from serving_servers import Server, body_oip, free_port, launch, wait_http

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlspec-bench" / "venvs"


def requirements() -> dict[str, list[str]]:
    """Each peer's pip requirements: the server, and the onnxruntime version mlspec runs on."""
    import onnxruntime

    runtime = f"onnxruntime=={onnxruntime.__version__}"
    return {"mlserver": ["mlserver==1.7.1", runtime], "kserve": ["kserve==0.21.0", runtime]}


def venv_python(peer: str) -> Path:
    """The interpreter of ``peer``'s environment, made (or remade, when its requirements changed) first."""
    wanted = requirements()[peer]
    folder = CACHE / peer
    python, stamp = folder / "bin" / "python", folder / "mlspec-bench.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return python
    print(f"creating {folder} ({' '.join(wanted)}; first run only, about a minute)", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{peer}-install.log"
    with log.open("w") as out:
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(folder)], check=False, stdout=out, stderr=subprocess.STDOUT
        )
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *wanted]
        installed = (
            made.returncode == 0
            and subprocess.run(pip, check=False, stdout=out, stderr=subprocess.STDOUT).returncode == 0
        )
    if not installed:
        sys.exit(
            f"cannot install {peer} ({' '.join(wanted)}) into {folder}: see {log}\n"
            f"(run with --skip-peers to measure without MLServer and KServe)"
        )
    stamp.write_text(json.dumps(wanted))
    return python


def start_mlserver(python: Path, model: Path, folder: Path) -> Server:
    """MLServer with the onnxruntime runtime of bench/peers/mlserver_onnx.py, one process.

    ``parallel_workers: 0`` runs inference in the server process (with 1, MLServer 1.7.1 forks an inference pool
    that fails to start under the uvloop 0.23 it installs; on one pinned CPU a second process only adds IPC).
    ``debug: false`` turns off the per-request access log, as in production."""
    root = folder / "mlserver"
    (root / "bench").mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "peers" / "mlserver_onnx.py", root / "bench" / "mlserver_onnx.py")
    port = free_port()
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
    }
    (root / "settings.json").write_text(json.dumps(settings))
    model_settings = {"name": "bench", "implementation": "mlserver_onnx.OnnxRuntime", "parameters": {"uri": str(model)}}
    (root / "bench" / "model-settings.json").write_text(json.dumps(model_settings))
    log = folder / "mlserver.log"
    proc = launch([str(python.parent / "mlserver"), "start", str(root)], log, cwd=root)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/models/bench/ready", 120, proc, log)
    return Server("mlserver 1.7.1", proc, f"{base}/v2/models/bench/infer", log, body_oip)


def start_kserve(python: Path, model: Path, folder: Path) -> Server:
    """KServe's ModelServer with the onnxruntime model of bench/peers/kserve_onnx.py, one uvicorn worker.

    Per-request logging is off (``--enable_latency_logging false`` and a log configuration at WARNING, which also
    silences uvicorn's access log); gRPC is off (the bench drives REST)."""
    quiet = {"level": "WARNING", "handlers": ["stderr"], "propagate": False}
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": dict.fromkeys(("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"), quiet),
    }
    (folder / "kserve-logging.json").write_text(json.dumps(log_config))
    port = free_port()
    command = [str(python), str(HERE / "peers" / "kserve_onnx.py"), "--model_name", "bench", "--model_path", str(model)]
    flags = ["--http_port", str(port), "--grpc_port", str(free_port()), "--workers", "1", "--enable_grpc", "false"]
    flags += ["--enable_latency_logging", "false", "--log_config_file", str(folder / "kserve-logging.json")]
    log = folder / "kserve.log"
    proc = launch([*command, *flags], log)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/models/bench/ready", 120, proc, log)
    return Server("kserve 0.21", proc, f"{base}/v2/models/bench/infer", log, body_oip)
