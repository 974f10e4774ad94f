"""The servers of bench/serving.py: the model, mlspec's server (with or without auth and gRPC), `mlflow models
serve`, the loopback identity provider the OIDC runs verify against, and how each is started, pinned and stopped."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FEATURES = 32
SERVER_CPU, CLIENT_CPU = 0, 1


def body_oip(rows: int) -> dict[str, Any]:
    """An Open Inference Protocol v2 request of ``rows`` rows of 32 features (one FP32 ``input``)."""
    data = [0.5] * (FEATURES * rows)
    return {"inputs": [{"name": "input", "shape": [rows, FEATURES], "datatype": "FP32", "data": data}]}


def body_mlflow(rows: int) -> dict[str, Any]:
    """The same rows as `mlflow models serve` takes them."""
    return {"inputs": [[0.5] * FEATURES for _ in range(rows)]}


@dataclass
class Server:
    """A started server: where to POST, the body maker, the headers each request carries."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    body: Any = body_oip
    headers: dict[str, str] = field(default_factory=dict)
    grpc: str | None = None  # host:port of its gRPC listener, if any
    batch: bool = True  # whether the 64-row runs include it


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


def pinning() -> str:
    """Why the servers cannot be pinned to CPU 0 and the load to CPU 1, or "" when they can."""
    if shutil.which("taskset") is None:
        return "taskset is missing (util-linux): servers and load share every CPU"
    if len(os.sched_getaffinity(0)) < 2 or not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        return f"CPUs {SERVER_CPU} and {CLIENT_CPU} are not both available: servers and load share the CPUs"
    return ""


def on_server_cpu(command: list[str]) -> list[str]:
    """``command`` pinned to the server CPU (unchanged where pinning is not possible)."""
    return command if pinning() else ["taskset", "-c", str(SERVER_CPU), *command]


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``url`` answers 200; stop the server and exit with its log's tail when it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop(proc)  # what it started
            sys.exit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    stop(proc)
    sys.exit(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def launch(command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """Start ``command`` pinned to the server CPU in its own process group, output to ``log``."""
    return subprocess.Popen(
        on_server_cpu(command),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and its process group (mlflow's uvicorn, MLServer's workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class IdentityProvider:
    """An OIDC issuer on loopback: its discovery document and JWKS (one RSA key), and RS256 tokens it signs."""

    def __init__(self) -> None:
        """Make the key and start serving (a daemon thread)."""
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwks = json.dumps({"keys": [{**public, "kid": "bench-1", "alg": "RS256", "use": "sig"}]}).encode()
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                documents = {"/.well-known/openid-configuration": provider.discovery(), "/keys": jwks}
                data = documents.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def discovery(self) -> bytes:
        """The OpenID discovery document: where the keys are."""
        return json.dumps({"issuer": self.issuer, "jwks_uri": self.issuer + "/keys"}).encode()

    def token(self, audience: str, lifetime: int = 3600) -> str:
        """An RS256 token for ``audience``, valid for ``lifetime`` seconds."""
        import jwt

        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "bench-client", "aud": audience, "iat": now, "exp": now + lifetime}
        return str(jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench-1"}))

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()


def api_key_auth(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The auth settings of an API-key server (a fresh key in a file) and the header a caller sends."""
    key = secrets.token_urlsafe(32)
    path = folder / "api-keys"
    path.write_text(f"# bench\n{key}\n")
    return {"method": "api_key", "api_key_file": str(path)}, {"X-API-Key": key}


def oidc_auth(idp: IdentityProvider) -> tuple[dict[str, Any], dict[str, str]]:
    """The auth settings of an OIDC server (keys found through the issuer's discovery document) and the header."""
    settings = {"method": "oidc", "issuer": idp.issuer, "audiences": ["bench"]}
    return settings, {"Authorization": f"Bearer {idp.token('bench')}"}


def start_mlspec(
    model: Path,
    folder: Path,
    name: str = "mlspec",
    *,
    auth: tuple[dict[str, Any], dict[str, str]] | None = None,
    grpc: bool = False,
    source: Path = REPO / "compiler",
) -> Server:
    """Start mlspec's server (direct rollout, batching on) on a free port, from the ``source`` tree's mlspec."""
    port, grpc_port = free_port(), free_port() if grpc else None
    config = {
        "deployment": "bench",
        "model_name": "bench",
        "host": "127.0.0.1",
        "port": port,
        "grpc_port": grpc_port,
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
        "status_path": str(folder / f"{name}-rollout.json"),
        "auth": auth[0] if auth else None,
    }
    slug = name.replace(" ", "-").replace("+", "")
    (folder / f"{slug}.json").write_text(json.dumps(config))
    log = folder / f"{slug}.log"
    env = dict(os.environ, PYTHONPATH=str(source))
    command = [sys.executable, "-m", "mlspec.serving", "--config", str(folder / f"{slug}.json")]
    proc = launch([*command, "--log-level", "WARNING"], log, env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/health/ready", 60, proc, log)
    headers = auth[1] if auth else {}
    return Server(name, proc, f"{base}/v2/models/bench/infer", log, body_oip, headers, f"127.0.0.1:{grpc_port}")


def start_mlflow(model: Path, folder: Path) -> Server:
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
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", info.model_uri, "--env-manager", "local"]
    proc = launch([*command, "--workers", "1", "-p", str(port), "-h", "127.0.0.1"], log, env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/ping", 120, proc, log)
    return Server("mlflow", proc, f"{base}/invocations", log, body_mlflow)
