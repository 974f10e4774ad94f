"""The application behind the connections: OIP v2 routes, dynamic batching, traffic routing, metrics and status."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlspec.atomic import atomic_write
from mlspec.serving import metrics as m
from mlspec.serving.config import STABLE, ConfigError, ServingConfig
from mlspec.serving.http import Connection, Ticket, response
from mlspec.serving.metrics import ShadowStats, VariantStats
from mlspec.serving.protocol import InferRequest, ProtocolError, decode_infer, encode_infer, error_body, response_prefix
from mlspec.serving.reqlog import RequestLog
from mlspec.serving.router import LOADED, LOADING, Arm, Router, make_router

if TYPE_CHECKING:
    from mlspec.crypto.keys import KeyEncryptionKey

log = logging.getLogger("mlspec.serving")
perf_counter = time.perf_counter
SERVER_NAME = "mlspec"
SERVER_VERSION = "0.1.0"
NON_FINITE = "model output holds NaN or infinity"


@dataclass(slots=True)
class Pending:
    """An infer request waiting for its variant's batch."""

    request: InferRequest
    conn: Connection
    ticket: Ticket
    started: float


def _json(status: int, payload: Any) -> bytes:
    return response(status, json.dumps(payload).encode())


class App:
    """Serves one Deployment: its arms (variants), router, batching queues, metrics and rollout status."""

    def __init__(self, config: ServingConfig) -> None:
        """An app for ``config``; variants start in state 'loading' (the server loads them)."""
        self.stats: dict[tuple[str, str], VariantStats] = {}
        self.codes: Counter[int] = Counter()
        self.shadow = ShadowStats()
        self.queues: dict[Arm, list[Pending]] = {}
        self.shadow_items: list[tuple[Arm, np.ndarray, np.ndarray]] = []
        self.flush_scheduled = False
        self.shadow_scheduled = False
        self.reqlog: RequestLog | None = None
        self.loop: Any = None
        self.install(config, self.make_arms(config))

    # configuration
    def make_arms(self, config: ServingConfig) -> dict[str, Arm]:
        """Fresh arms (state 'loading') for the config's variants; counters carry over by name and version."""
        arms = {}
        for variant in config.variants:
            stats = self.stats.setdefault((variant.name, variant.version), VariantStats())
            arms[variant.name] = Arm(variant.name, variant.alias, variant.version, stats)
        return arms

    def install(self, config: ServingConfig, arms: dict[str, Arm], router: Router | None = None) -> None:
        """Serve ``config`` with ``arms`` from now on (used at start and by a reload)."""
        self.config = config
        self.features = config.features
        self.batching = config.batching
        self.arms = arms
        self.router = router or make_router(config, arms)
        self.sticky_key = self.router.rollout.get("sticky_key") if config.strategy == "ab" else None
        names = (config.deployment, config.model_name)
        self.infer_routes: dict[bytes, Arm | None] = {}
        for name in names:
            self.infer_routes[f"/v2/models/{name}/infer".encode()] = None
            for arm in arms.values():
                self.infer_routes[f"/v2/models/{name}/versions/{arm.version}/infer".encode()] = arm
        wanted = config.log if config.log is not None and config.log.enabled else None
        current = self.reqlog
        if current is not None and (
            wanted is None
            or (current.path, current.sample_rate, current.kek.ref if current.kek else None)
            != (wanted.path, wanted.sample_rate, wanted.seal_key)
        ):
            current.close()
            self.reqlog = None
        if wanted is not None and self.reqlog is None and wanted.sample_rate > 0:
            kek = _seal_key(wanted.seal_key) if wanted.seal_key else None  # fails closed: no key, no server
            self.reqlog = RequestLog(wanted.path, wanted.sample_rate, config.features, config.deployment, kek=kek)
        self.log_rate = self.reqlog.sample_rate if self.reqlog is not None else 0.0

    def arm_loaded(self, arm: Arm) -> None:
        """Mark ``arm`` loaded (its model set) or rejected, tell the router, and publish the status."""
        if arm.model is not None:
            arm.state = LOADED
            arm.prefix = response_prefix(self.config.deployment, arm.version, arm.name, arm.model.output_name)
        self.router.on_state(arm)
        self.write_status()

    @property
    def ready(self) -> bool:
        """True once every variant finished loading (rejected ones get no traffic) and one can answer."""
        arms = self.arms.values()
        return all(a.state != LOADING for a in arms) and any(a.state == LOADED for a in arms)

    # status
    def device_info(self, arm: Arm) -> dict[str, Any]:
        """What ``arm`` runs on: device, requested_device, providers, fallback, fallback_reason (no model: device
        None, nothing in use)."""
        if arm.model is not None:
            return arm.model.device_info()
        return {
            "device": None,
            "requested_device": self.config.device,
            "providers": [],
            "fallback": False,
            "fallback_reason": "",
        }

    def status(self) -> dict[str, Any]:
        """The rollout status (the mlspec extension's JSON and the status file)."""
        router = self.router
        weights = router.weights()
        return {
            "deployment": self.config.deployment,
            "model_name": self.config.model_name,
            "strategy": router.strategy,
            "phase": router.phase,
            "reason": router.reason,
            "weights": weights,
            "variants": {
                name: {
                    "alias": arm.alias,
                    "version": arm.version,
                    "state": arm.state,
                    "reason": arm.reason,
                    **self.device_info(arm),
                    "weight": weights.get(name, 0.0),
                    "requests": arm.stats.requests,
                    "errors": arm.stats.errors,
                }
                for name, arm in self.arms.items()
            },
            **router.details(),
            **({"shadow": self.shadow_summary()} if router.strategy == "shadow" else {}),
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def shadow_summary(self) -> dict[str, Any]:
        """How the shadow challenger compares with stable so far."""
        s = self.shadow
        return {
            "requests": s.requests,
            "rows": s.rows,
            "mean_abs_diff": s.mean_abs_diff,
            "agreement": s.agreement,
            "errors": s.errors,
        }

    def write_status(self) -> None:
        """Write the status file atomically (when the config names one)."""
        path = self.config.status_path
        if not path:
            return
        try:
            atomic_write(Path(path), (json.dumps(self.status(), indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            log.error("cannot write rollout status %s: %s", path, exc)

    def _phase_changed(self) -> None:
        log.info("rollout %s: phase %s (%s)", self.router.strategy, self.router.phase, self.router.reason)
        self.write_status()

    # requests
    def dispatch(self, conn: Connection, method: bytes, url: bytes, body: bytes, sticky: str | None) -> bytes | None:
        """Answer one request (None when an infer request waits for its batch)."""
        routes = self.infer_routes
        if url in routes:
            if method != b"POST":
                return self._error(405, "infer takes POST")
            pinned = routes[url]
            return self._infer(conn, body, sticky, pinned, pinned is not None)
        return self._other(conn, method, url, body, sticky)

    def _error(self, status: int, message: str) -> bytes:
        self.codes[status] += 1
        return response(status, error_body(message))

    def _infer(
        self, conn: Connection, body: bytes, sticky: str | None, pinned: Arm | None, is_pinned: bool
    ) -> bytes | None:
        started = perf_counter()
        try:
            request = decode_infer(body, self.features)
        except ProtocolError as exc:
            return self._error(400, str(exc))
        if is_pinned:
            arm = pinned
            if arm is None or arm.model is None:
                return self._error(503, f"variant {arm.name if arm else '?'} is {arm.state if arm else 'missing'}")
        else:
            if self.sticky_key is not None and request.parameters:
                value = request.parameters.get(self.sticky_key)
                if value is not None:
                    sticky = str(value)
            arm = self.router.choose(sticky)
            if arm is None or arm.model is None:
                return self._error(503, "no variant is ready to answer")
        if self.batching:
            queue = self.queues.get(arm)
            if queue is None:
                queue = self.queues[arm] = []
            queue.append(Pending(request, conn, conn.defer(), started))
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self._flush)
            return None
        rows = request.rows
        arm.stats.batch.observe(len(rows))
        out, problem = self._run(arm, rows)
        return self._finish(arm, request, out, problem, started)

    @staticmethod
    def _run(arm: Arm, rows: np.ndarray) -> tuple[np.ndarray | None, str]:
        try:
            assert arm.model is not None
            return arm.model.run(rows), ""
        except Exception as exc:  # onnxruntime raises its own types
            return None, f"inference failed: {exc}"

    def _flush(self) -> None:
        """Run every queued request: one session.run per variant over the concatenated rows."""
        self.flush_scheduled = False
        queues, self.queues = self.queues, {}
        limit = self.config.max_batch
        for arm, items in queues.items():
            start = 0
            while start < len(items):
                chunk: list[Pending] = []
                rows_total = 0
                while start < len(items) and (not chunk or rows_total + len(items[start].request.rows) <= limit):
                    chunk.append(items[start])
                    rows_total += len(items[start].request.rows)
                    start += 1
                self._run_chunk(arm, chunk, rows_total)

    def _run_chunk(self, arm: Arm, chunk: list[Pending], rows_total: int) -> None:
        if len(chunk) == 1:
            item = chunk[0]
            arm.stats.batch.observe(rows_total)
            out, problem = self._run(arm, item.request.rows)
            item.conn.complete(item.ticket, self._finish(arm, item.request, out, problem, item.started))
            return
        arm.stats.batch.observe(rows_total)
        out, problem = self._run(arm, np.concatenate([p.request.rows for p in chunk]))
        if out is None:  # isolate the failing request(s)
            for item in chunk:
                self._run_chunk(arm, [item], len(item.request.rows))
            return
        offset = 0
        for item in chunk:
            n = len(item.request.rows)
            part = out[offset : offset + n]
            offset += n
            item.conn.complete(item.ticket, self._finish(arm, item.request, part, problem, item.started))

    def _finish(self, arm: Arm, request: InferRequest, out: np.ndarray | None, problem: str, started: float) -> bytes:
        stats = arm.stats
        status = 200
        if out is not None:
            try:
                body = encode_infer(arm.prefix, out, request.id)
            except ValueError:
                problem = NON_FINITE
        if problem:
            status = 500
            stats.errors += 1
            body = error_body(problem)
        latency = perf_counter() - started
        stats.requests += 1
        stats.latency.observe(latency)
        self.codes[status] += 1
        if self.router.record(arm, latency, status != 200):
            self._phase_changed()
        if status == 200 and out is not None:
            if self.log_rate and random.random() < self.log_rate and self.reqlog is not None:
                self.reqlog.add(arm.name, arm.version, request.rows, out)
            target = self.router.mirror()
            if target is not None and target is not arm and target.model is not None:
                self.shadow_items.append((target, request.rows, out))
                if not self.shadow_scheduled:
                    self.shadow_scheduled = True
                    self.loop.call_soon(self._shadow_flush)
        return response(status, body)

    def _shadow_flush(self) -> None:
        """Run the mirrored requests on the challenger (after their answers were written) and compare."""
        self.shadow_scheduled = False
        items, self.shadow_items = self.shadow_items, []
        if not items:
            return
        arm = items[0][0]
        rows = np.concatenate([i[1] for i in items])
        stable = np.concatenate([i[2] for i in items])
        started = perf_counter()
        out, _problem = self._run(arm, rows)
        latency = perf_counter() - started
        shadow = self.shadow
        shadow.requests += len(items)
        arm.stats.requests += len(items)
        arm.stats.batch.observe(len(rows))
        arm.stats.latency.observe(latency)
        if out is None or out.shape != stable.shape or not np.isfinite(out).all():
            shadow.errors += len(items)
            arm.stats.errors += len(items)
            return
        n = len(rows)
        shadow.rows += n
        shadow.values += out.size
        shadow.abs_diff_sum += float(np.abs(out.astype(np.float64) - stable).sum())
        same = ((out > 0.5) == (stable > 0.5)).reshape(n, -1).all(axis=1)
        shadow.same_decision_rows += int(same.sum())

    # other routes
    def _other(self, conn: Connection, method: bytes, url: bytes, body: bytes, sticky: str | None) -> bytes | None:
        path = url.split(b"?", 1)[0].decode("utf-8", "replace").rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            return self._model_route(conn, method, parts[2:], body, sticky)
        if method != b"GET":
            return self._error(
                405 if path in ("/v2", "/metrics", "/v2/health/live", "/v2/health/ready") else 404,
                f"{method.decode()} {path} is not served",
            )
        if path == "/v2/health/live":
            self.codes[200] += 1
            return _json(200, {"live": True})
        if path == "/v2/health/ready":
            ready = self.ready
            self.codes[200 if ready else 503] += 1
            devices = {name: self.device_info(arm) for name, arm in self.arms.items()}
            return _json(200 if ready else 503, {"ready": ready, "variants": self._states(), "devices": devices})
        if path == "/v2":
            self.codes[200] += 1
            return _json(200, {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["mlspec_rollout"]})
        if path == "/metrics":
            self.codes[200] += 1
            return response(200, self.metrics(), m.CONTENT_TYPE)
        return self._error(404, f"no route {path}")

    def _states(self) -> dict[str, str]:
        return {name: arm.state for name, arm in self.arms.items()}

    def _model_route(
        self, conn: Connection, method: bytes, parts: list[str], body: bytes, sticky: str | None
    ) -> bytes | None:
        name, rest = parts[0], parts[1:]
        if name not in (self.config.deployment, self.config.model_name):
            return self._error(404, f"unknown model {name!r}; this server serves {self.config.deployment!r}")
        arm: Arm | None = None
        pinned = False
        if len(rest) >= 2 and rest[0] == "versions":
            pinned = True
            arm = next((a for a in self.arms.values() if a.version == rest[1]), None)
            if arm is None:
                versions = ", ".join(a.version for a in self.arms.values())
                return self._error(404, f"model {name!r} has no version {rest[1]!r} (versions: {versions})")
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1:
            return self._error(404, f"no route /{'/'.join(parts)}")
        if action == "infer":
            if method != b"POST":
                return self._error(405, "infer takes POST")
            return self._infer(conn, body, sticky, arm, pinned)
        if method != b"GET":
            return self._error(405, f"{action or 'metadata'} takes GET")
        if action == "":
            self.codes[200] += 1
            return _json(200, self.metadata(arm))
        if action == "ready":
            ready = self.ready if arm is None else arm.state == LOADED
            self.codes[200 if ready else 503] += 1
            return _json(200 if ready else 503, {"name": self.config.deployment, "ready": ready})
        if action == "rollout" and arm is None:
            self.codes[200] += 1
            return _json(200, self.status())
        return self._error(404, f"no route /{'/'.join(parts)}")

    def metadata(self, pinned: Arm | None = None) -> dict[str, Any]:
        """OIP v2 model metadata (of one pinned variant, or of the deployment)."""
        arms = [pinned] if pinned is not None else list(self.arms.values())
        model = next((a.model for a in arms if a.model is not None), None)
        outputs: list[dict[str, Any]] = []
        if model is not None:
            out = next(o for o in model.session.get_outputs() if o.name == model.output_name)
            shape = [d if isinstance(d, int) else -1 for d in out.shape]
            outputs = [{"name": out.name, "datatype": "FP32", "shape": shape}]
        stable = self.arms.get(STABLE)
        device = (stable.model.device if stable is not None and stable.model is not None else None) or (
            model.device if model is not None else None
        )
        return {
            "name": self.config.deployment,
            "versions": [a.version for a in arms],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, len(self.features)]}],
            "outputs": outputs,
            "parameters": {
                "model_name": self.config.model_name,
                "features": list(self.features),
                "device": device,
                "variants": [
                    {
                        "name": a.name,
                        "alias": a.alias,
                        "version": a.version,
                        "state": a.state,
                        "reason": a.reason,
                        **self.device_info(a),
                    }
                    for a in arms
                ],
            },
        }

    def metrics(self) -> bytes:
        """The Prometheus exposition of every metric."""
        dep = self.config.deployment
        weights = self.router.weights()
        fam = {
            "requests": m.MetricFamily("mlspec_requests_total", "counter", "Infer requests answered, by variant."),
            "errors": m.MetricFamily("mlspec_request_errors_total", "counter", "Infer requests that failed (5xx)."),
            "latency": m.MetricFamily(
                "mlspec_request_duration_seconds", "histogram", "Infer latency from parsed request to response."
            ),
            "weight": m.MetricFamily("mlspec_traffic_weight_percent", "gauge", "Current share of traffic, percent."),
            "batch": m.MetricFamily("mlspec_batch_size_rows", "histogram", "Rows per onnxruntime session.run."),
            "info": m.MetricFamily("mlspec_model_info", "gauge", "Served variants, their version and device."),
            "loaded": m.MetricFamily("mlspec_variant_loaded", "gauge", "1 when the variant is loaded and verified."),
            "fallback": m.MetricFamily(
                "mlspec_device_fallback", "gauge", "1 when the variant asked for a GPU and runs on CPU, with why."
            ),
        }
        for arm in self.arms.values():
            lab = m.labels(deployment=dep, variant=arm.name, version=arm.version)
            s = arm.stats
            fam["requests"].samples.append(f"mlspec_requests_total{{{lab}}} {s.requests}")
            fam["errors"].samples.append(f"mlspec_request_errors_total{{{lab}}} {s.errors}")
            fam["latency"].samples.extend(s.latency.lines("mlspec_request_duration_seconds", lab))
            fam["weight"].samples.append(f"mlspec_traffic_weight_percent{{{lab}}} {weights.get(arm.name, 0.0):g}")
            fam["batch"].samples.extend(s.batch.lines("mlspec_batch_size_rows", lab))
            device = self.device_info(arm)
            used = device["device"] or "none"
            info = m.labels(
                deployment=dep,
                variant=arm.name,
                version=arm.version,
                alias=arm.alias,
                device=used,
                requested=device["requested_device"],
                providers=",".join(device["providers"]),
            )
            fam["info"].samples.append(f"mlspec_model_info{{{info}}} 1")
            fam["loaded"].samples.append(f"mlspec_variant_loaded{{{lab}}} {int(arm.state == LOADED)}")
            fell = m.labels(
                deployment=dep,
                variant=arm.name,
                requested=device["requested_device"],
                device=used,
                reason=device["fallback_reason"],
            )
            fam["fallback"].samples.append(f"mlspec_device_fallback{{{fell}}} {int(device['fallback'])}")
        router = self.router
        phase = m.MetricFamily("mlspec_rollout_phase", "gauge", "The rollout's current phase (value 1).")
        phase.samples.append(
            f"mlspec_rollout_phase{{{m.labels(deployment=dep, strategy=router.strategy, phase=router.phase)}}} 1"
        )
        families = [*fam.values(), phase]
        if router.strategy == "shadow" and router.challenger is not None:
            ch = router.challenger
            lab = m.labels(deployment=dep, variant=ch.name, version=ch.version)
            sh = self.shadow
            for name, kind, text, value in (
                ("mlspec_shadow_requests_total", "counter", "Requests mirrored to the shadow challenger.", sh.requests),
                ("mlspec_shadow_errors_total", "counter", "Mirrored requests the challenger failed.", sh.errors),
                (
                    "mlspec_shadow_mean_abs_diff",
                    "gauge",
                    "Mean absolute output difference, challenger vs stable.",
                    sh.mean_abs_diff,
                ),
                (
                    "mlspec_shadow_agreement_ratio",
                    "gauge",
                    "Share of rows with the same decision at 0.5.",
                    sh.agreement,
                ),
            ):
                families.append(m.MetricFamily(name, kind, text, [f"{name}{{{lab}}} {value:.9g}"]))
        codes = m.MetricFamily("mlspec_http_responses_total", "counter", "HTTP responses by status code.")
        codes.samples.extend(
            f"mlspec_http_responses_total{{{m.labels(deployment=dep, code=str(c))}}} {n}"
            for c, n in sorted(self.codes.items())
        )
        families.append(codes)
        if self.reqlog is not None:
            rows = m.MetricFamily("mlspec_request_log_rows_total", "counter", "Rows written to the request log.")
            rows.samples.append(f"mlspec_request_log_rows_total{{{m.labels(deployment=dep)}}} {self.reqlog.written}")
            families.append(rows)
        return m.render(families)


def _seal_key(ref: str) -> KeyEncryptionKey:
    """The request log's key (file:// against $MLSPEC_PROJECT_ROOT); ConfigError when it cannot be had."""
    from mlspec.crypto import CryptoError, KeyResolver

    try:
        return KeyResolver().resolve(ref)
    except CryptoError as exc:
        raise ConfigError(f"the request log is sealed with {ref}, which cannot be resolved: {exc}") from None


def check_seal_key(config: ServingConfig) -> None:
    """ConfigError when ``config`` seals its request log with a key that cannot be resolved here."""
    if config.log is not None and config.log.enabled and config.log.seal_key:
        _seal_key(config.log.seal_key)
