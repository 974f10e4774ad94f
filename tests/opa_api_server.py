"""An OPA-REST-API-compatible server on loopback, for contract tests of mlspec's OPA server mode.

No OPA server can be installed here (the package registries hold none), so this
speaks the subset of OPA's REST API mlspec uses (PUT /v1/policies/<id>,
PUT /v1/data/<path>, POST /v1/data/<path>) with a real Rego engine behind it. The
contract test proves that server mode sends the same policies, data and input as
the embedded mode and reads the answers back identically.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlspec.policy.engine import PolicyEngineError, RegorusEngine


class _State:
    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            return

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_PUT(self) -> None:
            body = self._body()
            with state.lock:
                state.requests.append(("PUT", self.path))
                if self.path.startswith("/v1/policies/"):
                    text = body.decode()
                    try:
                        RegorusEngine().add_policy(self.path, text)  # OPA refuses modules that do not compile
                    except PolicyEngineError as exc:
                        return self._reply(400, {"code": "invalid_parameter", "message": str(exc)})
                    state.policies[self.path] = text
                    return self._reply(200, {})
                if self.path.startswith("/v1/data/"):
                    keys = [k for k in self.path.removeprefix("/v1/data/").split("/") if k]
                    node = state.data
                    for key in keys[:-1]:
                        node = node.setdefault(key, {})
                    node[keys[-1]] = json.loads(body)
                    return self._reply(204, {})
            return self._reply(404, {"code": "not_found", "message": self.path})

        def do_POST(self) -> None:
            body = json.loads(self._body() or b"{}")
            with state.lock:
                state.requests.append(("POST", self.path))
                engine = RegorusEngine()
                for name, text in state.policies.items():
                    engine.add_policy(name, text)
                engine.set_data(state.data)
                query = "data." + self.path.removeprefix("/v1/data/").strip("/").replace("/", ".")
                try:
                    value = engine.evaluate(query, body.get("input"))
                except PolicyEngineError as exc:
                    return self._reply(500, {"code": "internal_error", "message": str(exc)})
            return self._reply(200, {} if value is None else {"result": value})

    return Handler


@contextmanager
def opa_api_server() -> Iterator[tuple[str, _State]]:
    """Serve on 127.0.0.1 (a free port) for the duration of the block; yields (url, state)."""
    state = _State()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
