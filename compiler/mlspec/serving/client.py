"""Small stdlib HTTP helpers for talking to a running server (used by the mlspec serving target and tests)."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any


class ServingClientError(Exception):
    """The server did not answer as expected."""


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """The context that trusts a server's CA (``ca_file``: the environment's local CA), or None for the defaults."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def _get(
    url: str, timeout: float, headers: dict[str, str] | None = None, ca_file: str | None = None
) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout, context=tls_context(ca_file)) as reply:
            return int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def is_ready(url: str, timeout: float = 2.0, ca_file: str | None = None) -> bool:
    """True when the server at ``url`` (e.g. http://127.0.0.1:8601, or https:// trusting ``ca_file``) answers
    ready."""
    try:
        return _get(f"{url.rstrip('/')}/v2/health/ready", timeout, None, ca_file)[0] == 200
    except OSError:
        return False


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Wait until the server at ``url`` is ready; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if is_ready(url, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"model server at {url} not ready after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def get_json(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None, ca_file: str | None = None) -> Any:
    """GET ``url`` (with ``headers``, e.g. credentials) and decode its JSON body; ServingClientError on a non-200."""
    status, body = _get(url, timeout, headers, ca_file)
    if status != 200:
        raise ServingClientError(f"GET {url}: HTTP {status}: {body[:500].decode('utf-8', 'replace')}")
    return json.loads(body)


def rollout_status(
    url: str, name: str, timeout: float = 5.0, *, headers: dict[str, str] | None = None, ca_file: str | None = None
) -> dict[str, Any]:
    """The live rollout status of model ``name`` (strategy, phase, weights, per-variant counts, reason); the
    route needs credentials when the server checks callers (``headers``)."""
    data: dict[str, Any] = get_json(f"{url.rstrip('/')}/v2/models/{name}/rollout", timeout, headers, ca_file)
    return data


def infer(
    url: str, name: str, rows: list[list[float]], *, version: str | None = None, timeout: float = 5.0, **extra: Any
) -> dict[str, Any]:
    """POST an OIP v2 infer request for ``rows`` ([N][F] floats); return the decoded response."""
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32", "data": rows}]}
    body.update(extra)
    path = f"/v2/models/{name}/versions/{version}/infer" if version else f"/v2/models/{name}/infer"
    request = urllib.request.Request(
        f"{url.rstrip('/')}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            data: dict[str, Any] = json.loads(reply.read())
            return data
    except urllib.error.HTTPError as exc:
        raise ServingClientError(
            f"POST {path}: HTTP {exc.code}: {exc.read()[:500].decode('utf-8', 'replace')}"
        ) from None


def wait_versions(
    url: str,
    name: str,
    versions: list[str],
    timeout: float = 30.0,
    *,
    headers: dict[str, str] | None = None,
    ca_file: str | None = None,
) -> None:
    """Wait until model ``name`` serves exactly ``versions`` (e.g. after a SIGHUP reload) and is ready.

    Raises TimeoutError after ``timeout`` seconds (a refused reload keeps the old versions; see the server log).
    """
    wanted = sorted(str(v) for v in versions)
    deadline = time.monotonic() + timeout
    while True:
        try:
            meta = get_json(f"{url.rstrip('/')}/v2/models/{name}", timeout=2.0, headers=headers, ca_file=ca_file)
            if sorted(meta.get("versions", [])) == wanted and is_ready(url, ca_file=ca_file):
                return
        except (OSError, ValueError, ServingClientError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"model server at {url} does not serve versions {wanted} after {timeout:g} s")
        time.sleep(0.05)
