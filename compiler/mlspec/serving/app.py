"""The HTTP application of one Deployment: its variants, the route table over them, and the answers to each route.

The pieces it composes: :mod:`~mlspec.serving.routing` (the route table), :mod:`~mlspec.serving.inference` (the
infer path: batching, answers, shadow), :mod:`~mlspec.serving.protocol` (OIP v2 bodies),
:mod:`~mlspec.serving.status` (the rollout status) and :mod:`~mlspec.serving.exposition` (Prometheus text).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import mlspec
from mlspec.serving import metrics as m
from mlspec.serving import protocol
from mlspec.serving.auth import AuthConfigError, Authenticator, Denied
from mlspec.serving.config import STABLE, ConfigError, ServingConfig
from mlspec.serving.exposition import exposition
from mlspec.serving.http import Connection, Headers, response, response_with_headers
from mlspec.serving.inference import Inference, counted_error
from mlspec.serving.metrics import ShadowStats, VariantStats
from mlspec.serving.reqlog import RequestLog, reopen_request_log
from mlspec.serving.router import LOADED, LOADING, Arm, Router, make_router
from mlspec.serving.routing import Handler, RouteMiss, RouteTable
from mlspec.serving.status import device_info, rollout_status, write_status_file

log = logging.getLogger("mlspec.serving")
GET, POST = "GET", "POST"


def check_auth(config: ServingConfig) -> None:
    """Raise ConfigError when ``config.auth``'s keys cannot be had (checked before a reload swaps anything)."""
    if config.auth is not None:
        try:
            Authenticator(config.auth, config.deployment)
        except AuthConfigError as exc:
            raise ConfigError(str(exc)) from exc


class App:
    """Serves one Deployment: its arms (variants), router, routes, metrics and rollout status."""

    def __init__(self, config: ServingConfig) -> None:
        """An app for ``config``; variants start in state 'loading' (the server loads them)."""
        self.stats: dict[tuple[str, str], VariantStats] = {}
        self.codes: Counter[int] = Counter()
        self.grpc_codes: Counter[tuple[str, str]] = Counter()  # gRPC calls by method and status code name
        self.shadow = ShadowStats()
        self.reqlog: RequestLog | None = None
        self.auth_outcomes: Counter[str] = Counter()
        self.authenticator: Authenticator | None = None
        self.inference = Inference(self.codes, self.shadow, self._phase_changed)
        self.install(config, self.make_arms(config))

    @property
    def loop(self) -> Any:
        """The event loop the batches and shadow runs are scheduled on."""
        return self.inference.loop

    @loop.setter
    def loop(self, loop: Any) -> None:
        self.inference.loop = loop

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
        self.set_auth(config)
        self.config = config
        self.arms = arms
        self.router = router or make_router(config, arms)
        self.reqlog = reopen_request_log(self.reqlog, config)
        self.inference.configure(config, self.router, self.reqlog)
        self.routes = self.route_table()

    def set_auth(self, config: ServingConfig) -> None:
        """Check callers as ``config.auth`` says from now on (keys are read now: ConfigError when they cannot be)."""
        current = self.authenticator
        if current is not None and current.config == config.auth:
            return
        fresh = None
        if config.auth is not None:
            try:
                fresh = Authenticator(config.auth, config.deployment, self.auth_outcomes)
            except AuthConfigError as exc:
                raise ConfigError(str(exc)) from exc
            fresh.start()
        if current is not None:
            current.stop()
        self.authenticator = fresh

    def close(self) -> None:
        """Stop background work (the issuer key refresh)."""
        if self.authenticator is not None:
            self.authenticator.stop()

    def arm_loaded(self, arm: Arm) -> None:
        """Mark ``arm`` loaded (its model set) or rejected, tell the router, and publish the status."""
        if arm.model is not None:
            arm.state = LOADED
            arm.prefix = protocol.response_prefix(self.config.deployment, arm.version, arm.name, arm.model.output_name)
        self.router.on_state(arm)
        self.write_status()

    @property
    def ready(self) -> bool:
        """True once every variant finished loading (rejected ones get no traffic) and one can answer."""
        arms = self.arms.values()
        auth_ready = self.authenticator is None or self.authenticator.ready
        return auth_ready and all(a.state != LOADING for a in arms) and any(a.state == LOADED for a in arms)

    # routes
    def route_table(self) -> RouteTable:
        """Every route this app answers, for the current config and arms (rebuilt by install)."""
        table = RouteTable(self.refuse)
        guard = self.guard
        infer = guard("infer", self.inference.infer)
        for name in (self.config.deployment, self.config.model_name):
            base = f"/v2/models/{name}"
            table.add(f"{base}/infer", POST, infer)
            table.add(base, GET, guard("metadata", self.model_metadata_route(None)))
            table.add(f"{base}/ready", GET, guard("health", self.model_ready_route(None)))
            table.add(f"{base}/rollout", GET, guard("metadata", self.rollout))
            for arm in self.arms.values():
                pinned = f"{base}/versions/{arm.version}"
                table.add(f"{pinned}/infer", POST, guard("infer", self.pinned_infer_route(arm)))
                table.add(pinned, GET, guard("metadata", self.model_metadata_route(arm)))
                table.add(f"{pinned}/ready", GET, guard("health", self.model_ready_route(arm)))
        table.add("/v2/health/live", GET, guard("health", self.live))
        table.add("/v2/health/ready", GET, guard("health", self.health_ready))
        table.add("/v2", GET, guard("metadata", self.server_metadata))
        table.add("/metrics", GET, guard("metrics", self.metrics_route))
        return table

    def guard(self, kind: str, handler: Handler) -> Handler:
        """``handler`` behind the authenticator (the handler itself when the route kind needs no credentials)."""
        auth = self.authenticator
        if auth is None or auth.is_open(kind):
            return handler
        check = auth.check

        def guarded(conn: Connection, body: bytes, headers: Headers) -> bytes | None:
            denied = check(kind, headers.authorization, headers.api_key)
            if denied is not None:
                return self.refuse_caller(denied)
            return handler(conn, body, headers)

        return guarded

    def refuse_caller(self, denied: Denied) -> bytes:
        """The 401 (with its ``WWW-Authenticate`` challenge) or 403 of a refused caller."""
        self.codes[denied.status] += 1
        extra = {"WWW-Authenticate": denied.challenge} if denied.challenge else {}
        return response_with_headers(denied.status, protocol.error_body(denied.message), extra)

    def authorize(self, route: str, authorization: str | None, api_key: str | None) -> Denied | None:
        """None when a caller with these credentials may use a ``route`` kind (see ``auth.ROUTE_KINDS``), else
        why not. The HTTP and gRPC front ends both ask this before answering."""
        auth = self.authenticator
        return None if auth is None else auth.check(route, authorization, api_key)

    def dispatch(self, conn: Connection, method: bytes, url: bytes, body: bytes, headers: Headers) -> bytes | None:
        """Answer one request (None when an infer request waits for its batch)."""
        return self.routes.dispatch(conn, method, url, body, headers)

    def refuse(self, miss: RouteMiss, headers: Headers) -> bytes:
        """The answer to a request no route takes: 405 with ``Allow``, or 404 saying what is not there; a caller
        the server would not serve gets the 401/403 instead (a miss must not tell what is served)."""
        auth = self.authenticator
        if auth is not None and not auth.is_open("metadata"):
            denied = auth.check("metadata", headers.authorization, headers.api_key)
            if denied is not None:
                return self.refuse_caller(denied)
        if miss.status == 405:
            self.codes[405] += 1
            message = f"{miss.method} {miss.path} is not allowed; it takes {', '.join(miss.allow)}"
            return response_with_headers(405, protocol.error_body(message), {"Allow": ", ".join(miss.allow)})
        return counted_error(self.codes, 404, self.not_found(miss.path))

    def not_found(self, path: str) -> str:
        """Why ``path`` is not served: an unknown model, an unknown version, or no such route."""
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            name = parts[2]
            if name not in (self.config.deployment, self.config.model_name):
                return f"unknown model {name!r}; this server serves {self.config.deployment!r}"
            if len(parts) >= 5 and parts[3] == "versions" and all(a.version != parts[4] for a in self.arms.values()):
                versions = ", ".join(a.version for a in self.arms.values())
                return f"model {name!r} has no version {parts[4]!r} (versions: {versions})"
        return f"no route {path}"

    def answer(self, status: int, payload: Any) -> bytes:
        """A JSON response, counted under its status."""
        self.codes[status] += 1
        return response(status, protocol.json_body(payload))

    def pinned_infer_route(self, arm: Arm) -> Handler:
        """POST /v2/models/<name>/versions/<v>/infer: infer on that variant."""
        infer = self.inference.infer
        return lambda conn, body, headers: infer(conn, body, headers, arm)

    def model_metadata_route(self, arm: Arm | None) -> Handler:
        """GET /v2/models/<name>[/versions/<v>]."""
        return lambda conn, body, headers: self.answer(200, self.metadata(arm))

    def model_ready_route(self, arm: Arm | None) -> Handler:
        """GET /v2/models/<name>[/versions/<v>]/ready: 200 when it can answer, else 503."""

        def ready(conn: Connection, body: bytes, headers: Headers) -> bytes:
            is_ready = self.ready if arm is None else arm.state == LOADED
            return self.answer(200 if is_ready else 503, protocol.model_ready(self.config.deployment, is_ready))

        return ready

    def rollout(self, conn: Connection, body: bytes, headers: Headers) -> bytes:
        """GET /v2/models/<name>/rollout: the rollout status."""
        return self.answer(200, self.status())

    def live(self, conn: Connection, body: bytes, headers: Headers) -> bytes:
        """GET /v2/health/live."""
        return self.answer(200, {"live": True})

    def health_ready(self, conn: Connection, body: bytes, headers: Headers) -> bytes:
        """GET /v2/health/ready: 200 once ready, else 503; with each variant's state and device."""
        ready = self.ready
        states = {name: arm.state for name, arm in self.arms.items()}
        return self.answer(200 if ready else 503, protocol.server_ready(ready, states, self.devices()))

    def server_metadata(self, conn: Connection, body: bytes, headers: Headers) -> bytes:
        """GET /v2: the server's name, version and extensions."""
        return self.answer(200, protocol.server_metadata(mlspec.__version__))

    def metrics_route(self, conn: Connection, body: bytes, headers: Headers) -> bytes:
        """GET /metrics: the Prometheus exposition."""
        self.codes[200] += 1
        return response(200, self.metrics(), m.CONTENT_TYPE)

    # documents
    def devices(self) -> dict[str, dict[str, Any]]:
        """What each variant runs on (see :func:`~mlspec.serving.status.device_info`)."""
        return {name: device_info(arm, self.config.device) for name, arm in self.arms.items()}

    def status(self) -> dict[str, Any]:
        """The rollout status (the mlspec extension's JSON and the status file)."""
        config = self.config
        return rollout_status(
            config.deployment, config.model_name, self.arms, self.router, devices=self.devices(), shadow=self.shadow
        )

    def write_status(self) -> None:
        """Write the status file atomically (when the config names one)."""
        if self.config.status_path:
            write_status_file(self.config.status_path, self.status())

    def _phase_changed(self) -> None:
        log.info("rollout %s: phase %s (%s)", self.router.strategy, self.router.phase, self.router.reason)
        self.write_status()

    def metadata(self, pinned: Arm | None = None) -> dict[str, Any]:
        """OIP v2 model metadata (of one pinned variant, or of the deployment)."""
        arms = [pinned] if pinned is not None else list(self.arms.values())
        model = next((a.model for a in arms if a.model is not None), None)
        outputs = [protocol.output_metadata(model.session, model.output_name)] if model is not None else []
        stable = self.arms.get(STABLE)
        device = (stable.model.device if stable is not None and stable.model is not None else None) or (
            model.device if model is not None else None
        )
        variants = [
            {
                "name": a.name,
                "alias": a.alias,
                "version": a.version,
                "state": a.state,
                "reason": a.reason,
                **device_info(a, self.config.device),
            }
            for a in arms
        ]
        features = self.config.features
        parameters = {
            "model_name": self.config.model_name,
            "features": list(features),
            "device": device,
            "variants": variants,
        }
        versions = [a.version for a in arms]
        return protocol.model_metadata(self.config.deployment, versions, len(features), outputs, parameters)

    def metrics(self) -> bytes:
        """The Prometheus exposition of every metric."""
        log_rows = self.reqlog.written if self.reqlog is not None else None
        return exposition(
            self.config.deployment,
            self.arms,
            self.router,
            devices=self.devices(),
            shadow=self.shadow,
            codes=self.codes,
            log_rows=log_rows,
            auth=(self.config.auth.method, self.auth_outcomes) if self.config.auth is not None else None,
            grpc_codes=self.grpc_codes,
        )
