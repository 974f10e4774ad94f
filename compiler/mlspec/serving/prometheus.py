"""A small client of the Prometheus HTTP API (``/api/v1/query``): instant queries, urllib and JSON only.

It raises :class:`PrometheusError` saying what went wrong (unreachable, an HTTP error, a query Prometheus
refused, an answer that is not a vector), so that whoever judges from its numbers can fail safe and say why.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PrometheusError(RuntimeError):
    """Prometheus could not be asked, or did not answer the query (the message says which and why)."""


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector: its labels and its value (NaN stays NaN)."""

    labels: dict[str, str]
    value: float


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal (backslashes, quotes and newlines escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metric: str, **labels: str) -> str:
    """``metric{label="value",...}`` with every value quoted for PromQL."""
    inner = ",".join(f"{key}={promql_string(value)}" for key, value in labels.items())
    return f"{metric}{{{inner}}}"


class Prometheus:
    """Instant queries against one Prometheus server (``url`` is its base, e.g. http://prometheus:9090)."""

    def __init__(self, url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> None:
        """A client of the server at ``url``; ``headers`` go with every request (e.g. an Authorization)."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """The instant vector ``promql`` evaluates to at ``at`` (Unix seconds; None: Prometheus's now)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        result = data.get("result")
        kind = data.get("resultType")
        if kind == "scalar" and isinstance(result, list) and len(result) == 2:
            return [Sample({}, _number(result[1]))]
        if kind != "vector" or not isinstance(result, list):
            raise PrometheusError(f"query {promql!r} returned a {kind}, not an instant vector")
        return [Sample(dict(item.get("metric") or {}), _number(item["value"][1])) for item in result]

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The single number ``promql`` evaluates to (None: no series matched, or the value is NaN)."""
        samples = self.query(promql, at)
        if len(samples) > 1:
            raise PrometheusError(f"query {promql!r} returned {len(samples)} series, not one: aggregate it")
        if not samples or math.isnan(samples[0].value):
            return None
        return samples[0].value

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers={"Accept": "application/json", **self.headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # the http(s) URL we were given
                raw = reply.read()
        except urllib.error.HTTPError as exc:  # 400/422/503 carry Prometheus's own error in JSON
            raw = exc.read()
            detail = _error_of(raw) or exc.reason
            raise PrometheusError(f"Prometheus at {self.url} answered HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise PrometheusError(f"Prometheus at {self.url} is unreachable: {reason}") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise PrometheusError(f"Prometheus at {self.url} answered something that is not JSON") from exc
        if not isinstance(body, dict) or body.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.url} refused the query: {_error_of(raw) or body!r}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"Prometheus at {self.url} answered without data")
        return data


def _number(text: Any) -> float:
    """A sample value as Prometheus writes it ("1.5", "NaN", "+Inf")."""
    try:
        return float(text)
    except (TypeError, ValueError) as exc:
        raise PrometheusError(f"Prometheus returned {text!r} where a number belongs") from exc


def _error_of(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("error"):
        return f"{body.get('errorType', 'error')}: {body['error']}"
    return ""
