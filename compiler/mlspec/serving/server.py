"""Run the server: load and verify variants, listen, handle SIGTERM/SIGINT (stop) and SIGHUP (reload)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
from typing import TYPE_CHECKING, Any

from mlspec.serving.app import App, check_auth
from mlspec.serving.config import STABLE, ConfigError, ServingConfig
from mlspec.serving.http import Connection, Headers, Limits, reclaim, sweep
from mlspec.serving.models import LoadedModel, ModelError, load_model, read_verified, smoke_test
from mlspec.serving.reqlog import check_seal_key
from mlspec.serving.router import REJECTED, Arm

if TYPE_CHECKING:
    from mlspec.serving.grpc_server import GrpcListener

log = logging.getLogger("mlspec.serving")
MODEL_WATCH_INTERVAL = 2.0  # seconds between checks of the served model files' identity
GRPC_GRACE = 5.0  # seconds gRPC calls in flight get to finish on SIGTERM


class StartupError(Exception):
    """The server cannot start (the message says why); the process exits 1."""


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is importable (and MLSPEC_SERVING_PURE is not 1), else asyncio's."""
    if os.environ.get("MLSPEC_SERVING_PURE") != "1":
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        except ImportError:  # pragma: no cover - uvloop is optional
            pass
    return asyncio.new_event_loop()


def server_tls(config: ServingConfig) -> ssl.SSLContext | None:
    """The TLS context of the REST listener (TLS 1.2 or later), or None for plain HTTP; StartupError when the
    certificate or key cannot be loaded."""
    if config.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load the TLS certificate {config.tls.cert_file}: {exc}") from exc
    return context


def load_variant(config: ServingConfig, arm_name: str) -> LoadedModel:
    """Verify and load one variant of ``config`` (with a smoke inference for a blue/green green)."""
    variant = config.variant(arm_name)
    assert variant is not None
    model = load_model(variant, len(config.features), config.device, config.fallback, config.threads)
    if config.strategy == "blue_green" and arm_name != STABLE:
        smoke_test(model)
    return model


def primary_names(config: ServingConfig) -> list[str]:
    """Variants loaded before listening: 'stable', or every arm of an A/B test."""
    if config.strategy == "ab":
        return [v.name for v in config.variants]
    return [STABLE]


class Server:
    """One listening socket, one event loop, one App."""

    def __init__(self, config_path: str) -> None:
        """A server for the configuration file at ``config_path`` (read by start)."""
        self.config_path = config_path
        self.connections: set[Connection] = set()
        self.stopping: asyncio.Event | None = None
        self.server: asyncio.AbstractServer | None = None
        self.app: App | None = None
        self.grpc: GrpcListener | None = None  # the Open Inference Protocol over gRPC, when grpc_port is set
        self.reloading = False
        self.background: set[asyncio.Future[Any]] = set()

    async def _load(self, config: ServingConfig, name: str) -> LoadedModel | ModelError:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, load_variant, config, name)
        except ModelError as exc:
            return exc

    async def start(self) -> str:
        """Load the primary variants, listen, and load the others in the background; return the URL."""
        try:
            config = ServingConfig.load(self.config_path)
        except ConfigError as exc:
            raise StartupError(str(exc)) from exc
        try:
            app = App(config)
        except ConfigError as exc:  # e.g. the request log's key cannot be resolved
            raise StartupError(str(exc)) from exc
        app.loop = asyncio.get_running_loop()
        self.app = app
        primaries = primary_names(config)
        for name in primaries:
            self._settle(app, app.arms[name], await self._load(config, name))
        if not any(app.arms[n].model is not None for n in primaries):
            reasons = "; ".join(app.arms[n].reason for n in primaries)
            raise StartupError(f"no variant can serve: {reasons}")
        loop = asyncio.get_running_loop()
        limits = Limits(config.max_connections, config.request_timeout, config.idle_timeout, config.max_buffered)
        self.server = await loop.create_server(
            lambda: Connection(self, self.connections, limits), config.host, config.port, reuse_address=True,
            backlog=2048, ssl=server_tls(config),
        )  # fmt: skip
        self._spawn(self._sweep(limits))
        self._spawn(self._watch_models())
        sock = self.server.sockets[0]
        host, port = sock.getsockname()[:2]
        if config.grpc_port is not None:  # on this loop, into the same App and infer path
            from mlspec.serving.grpc_server import start_grpc

            self.grpc = await start_grpc(self.current_app, config.host, config.grpc_port, config.tls)
            log.info("grpc listening on %s", self.grpc.address)
        for name in app.arms:
            if name not in primaries:
                self._spawn(self._load_later(app, config, name))
        app.write_status()
        return f"{config.scheme}://{host}:{port}"

    def current_app(self) -> App:
        """The app serving now (what the gRPC front end answers from)."""
        assert self.app is not None
        return self.app

    def dispatch(self, conn: Connection, method: bytes, url: bytes, body: bytes, headers: Headers) -> bytes | None:
        """Hand a request to the current app (a reload swaps it)."""
        assert self.app is not None
        return self.app.dispatch(conn, method, url, body, headers)

    async def verify_models(self, app: App) -> None:
        """Re-check every serving variant's file against its digest (decrypting a sealed one in memory); a file
        that no longer matches stops serving at once (its variant is rejected, the router moves traffic away)."""
        loop = asyncio.get_running_loop()
        for arm in list(app.arms.values()):
            variant = app.config.variant(arm.name)
            if arm.model is None or variant is None:
                continue
            try:
                await loop.run_in_executor(None, read_verified, variant)
            except ModelError as exc:
                if app is self.app and arm.model is not None:
                    log.error("variant %s stops serving: its model file changed on disk: %s", arm.name, exc)
                    arm.model, arm.state = None, REJECTED
                    arm.reason = f"model file changed on disk since it was verified: {exc}"
                    app.arm_loaded(arm)

    async def _watch_models(self) -> None:
        """Every few seconds: re-verify a variant whose file's identity (inode, size, mtime) changed."""
        seen: dict[str, tuple[int, int, int] | None] = {}
        while True:
            app = self.app
            if app is not None:
                changed = False
                for arm in app.arms.values():
                    variant = app.config.variant(arm.name)
                    if variant is None or arm.model is None:
                        continue
                    try:
                        info = os.stat(variant.path)
                        identity: tuple[int, int, int] | None = (info.st_ino, info.st_size, info.st_mtime_ns)
                    except OSError:
                        identity = None
                    changed |= variant.path in seen and seen[variant.path] != identity
                    seen[variant.path] = identity
                if changed:
                    await self.verify_models(app)
            await asyncio.sleep(MODEL_WATCH_INTERVAL)

    async def _sweep(self, limits: Limits) -> None:
        """Once a second: close connections past their limits (slow requests get 408, silent idle ones close)."""
        while True:
            await asyncio.sleep(min(1.0, limits.request_timeout / 2, limits.idle_timeout / 2))
            closed = sweep(self.connections, limits, time.monotonic())
            if closed:
                log.info("closed %d connection(s) past their time limits", closed)
            peak = limits.high_water
            if reclaim(limits):  # a flood of bodies is over: the memory it took goes back to the system
                log.info("request bodies down from %d to %d bytes: freed memory returned", peak, limits.buffered)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    @staticmethod
    def _settle(app: App, arm: Arm, result: LoadedModel | ModelError) -> None:
        if isinstance(result, ModelError):
            arm.state, arm.reason = REJECTED, str(result)
            log.error("%s", result)
        else:
            arm.model = result
        app.arm_loaded(arm)

    async def _load_later(self, app: App, config: ServingConfig, name: str) -> None:
        result = await self._load(config, name)
        if app.arms.get(name) is not None and app.config is config:
            self._settle(app, app.arms[name], result)

    async def reload(self) -> bool:
        """Re-read the config; verify and load its variants; swap only when all load (else keep the old one)."""
        app = self.app
        if app is None or self.reloading:
            return False
        self.reloading = True
        try:
            try:
                new = ServingConfig.load(self.config_path)
                check_seal_key(new)  # before anything is swapped: a key that cannot be had refuses the reload
                check_auth(new)
            except ConfigError as exc:
                log.error("reload refused, keeping the old config: %s", exc)
                return False
            old = app.config
            if (new.host, new.port, new.grpc_port) != (old.host, old.port, old.grpc_port):
                log.warning("reload: host/port changes need a restart; keeping %s:%s", old.host, old.port)
            if new.variants == old.variants and new.rollout == old.rollout and new.features == old.features:
                app.install(new, app.arms, app.router)  # same models and rollout: keep their state
                await self.verify_models(app)  # ... but never a file replaced since it was loaded
                log.info("reload: variants and rollout unchanged; settings applied")
                return True
            arms = app.make_arms(new)
            for name, arm in arms.items():
                variant = new.variant(name)
                previous = old.variant(name)
                current = app.arms.get(name)
                same = (
                    previous == variant
                    and current is not None
                    and current.model is not None
                    and (new.device, new.fallback, new.features) == (old.device, old.fallback, old.features)
                )
                if same and current is not None:
                    arm.model = current.model
                    continue
                result = await self._load(new, name)
                if isinstance(result, ModelError):
                    log.error("reload refused, keeping the old config: %s", result)
                    return False
                arm.model = result
            app.install(new, arms)
            for arm in arms.values():
                app.arm_loaded(arm)
            log.info(
                "reload: now serving %s (%s)", ", ".join(f"{a.name}@{a.version}" for a in arms.values()), new.strategy
            )
            return True
        finally:
            self.reloading = False

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        try:
            url = await self.start()
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            self._close_log()
            return 1
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            self._close_log()
            return 1
        stopping = self.stopping
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        log.info("listening on %s (pid %d)", url, os.getpid())
        await stopping.wait()
        log.info("stopping: no new connections; flushing logs")
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Stop accepting, let queued answers go out, close connections and flush the request log."""
        for task in list(self.background):  # the sweeper and any variant still loading
            task.cancel()
        if self.server is not None:
            self.server.close()
        if self.grpc is not None:  # new calls refused; calls in flight finish (their batches run meanwhile)
            await self.grpc.stop(GRPC_GRACE)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.close_when_idle()
        await asyncio.sleep(0.05)
        self._close_log()
        if self.app is not None:
            self.app.write_status()
            self.app.close()

    def _close_log(self) -> None:
        if self.app is not None and self.app.reqlog is not None:
            self.app.reqlog.close()


def run(config_path: str) -> int:
    """Serve the configuration at ``config_path`` until stopped; return the process exit code."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(Server(config_path).serve())
    finally:
        loop.close()
