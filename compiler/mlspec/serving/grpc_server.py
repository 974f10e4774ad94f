"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on the server's own event loop.

grpc.aio runs on the loop the HTTP server runs on (uvloop included), so a ``ModelInfer`` goes through the very infer
path a REST request does (:meth:`~mlspec.serving.inference.Inference.submit`): the router picks the variant, the
request is batched with REST requests of the same loop turn, and the answer is counted per variant, recorded by a
canary, sampled into the request log and mirrored to a shadow. Each call asks :meth:`App.authorize
<mlspec.serving.app.App.authorize>` first, with the ``authorization`` and ``x-api-key`` metadata.

Triton's client (``tritonclient.grpc``) calls the same service name and methods (its proto is a superset of this
one in package ``inference``), so it works unchanged; it sends numpy data as ``raw_input_contents`` and reads
``raw_output_contents``, which is what the answer holds when the request's inputs were raw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, TypeVar

import grpc

import mlspec
from mlspec.serving import grpc_codec
from mlspec.serving.app import App
from mlspec.serving.config import TlsConfig
from mlspec.serving.feature_lookup import entity_keys
from mlspec.serving.http import MAX_BODY, Ticket
from mlspec.serving.oip_grpc import open_inference_grpc_pb2 as pb
from mlspec.serving.oip_grpc import open_inference_grpc_pb2_grpc as service
from mlspec.serving.protocol import ProtocolError, server_metadata
from mlspec.serving.router import LOADED, Arm

log = logging.getLogger("mlspec.serving")
Code = grpc.StatusCode
# the REST status of an answer -> the gRPC status code of the same outcome
CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    500: Code.INTERNAL,
    503: Code.UNAVAILABLE,
}
OPTIONS = (
    ("grpc.max_receive_message_length", MAX_BODY),  # as large as a REST body may be
    ("grpc.max_send_message_length", MAX_BODY),
    ("grpc.so_reuseport", 0),  # a port another process holds is an error, not a silently shared port
)
Reply = TypeVar("Reply")


class Refused(Exception):
    """A call answered with a gRPC error status: its code, the message, and trailing metadata."""

    def __init__(self, code: Any, message: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        """A refusal with ``code`` (a ``grpc.StatusCode``) and ``message``."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailers = trailers


class GrpcCall:
    """One ModelInfer waiting for its answer: the :class:`~mlspec.serving.inference.Responder` the infer path
    completes when the request's batch has run."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        """A call whose answer will arrive on the running loop."""
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def defer(self) -> Ticket:
        """The slot of this call's answer (a call has exactly one)."""
        return Ticket(close=False)

    def complete(self, ticket: Ticket, data: bytes) -> None:
        """Hand the answer to the waiting call (dropped when the client has gone)."""
        if not self.future.done():
            self.future.set_result(data)


def pinned_arm(app: App, name: str, version: str) -> Arm | None:
    """The variant serving ``version`` of model ``name`` (None: no version asked); Refused NOT_FOUND, with REST's
    message, for a model or version this server does not serve."""
    config = app.config
    if name not in (config.deployment, config.model_name):
        raise Refused(Code.NOT_FOUND, f"unknown model {name!r}; this server serves {config.deployment!r}")
    if not version:
        return None
    arm = next((a for a in app.arms.values() if a.version == version), None)
    if arm is None:
        versions = ", ".join(a.version for a in app.arms.values())
        raise Refused(Code.NOT_FOUND, f"model {name!r} has no version {version!r} (versions: {versions})")
    return arm


class InferenceService:
    """The six methods of ``GRPCInferenceService`` over the server's current App."""

    def __init__(self, app_of: Callable[[], App]) -> None:
        """A service answering from ``app_of()`` (the server's App, whatever a reload installed)."""
        self.app_of = app_of

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        """Live while the process serves."""
        return await self.call("ServerLive", "health", context, self._live)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        """Ready once every variant finished loading and one can answer (as GET /v2/health/ready)."""
        return await self.call("ServerReady", "health", context, self._ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Whether the model (or one version of it) can answer."""

        async def work(app: App, headers: dict[str, str]) -> pb.ModelReadyResponse:
            arm = pinned_arm(app, request.name, request.version)
            return pb.ModelReadyResponse(ready=app.ready if arm is None else arm.state == LOADED)

        return await self.call("ModelReady", "health", context, work)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        """The server's name, version and extensions (as GET /v2)."""
        return await self.call("ServerMetadata", "metadata", context, self._server_metadata)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        """The model's (or one version's) metadata, as GET /v2/models/<name>[/versions/<v>]."""

        async def work(app: App, headers: dict[str, str]) -> pb.ModelMetadataResponse:
            arm = pinned_arm(app, request.name, request.version)
            return grpc_codec.metadata_response(app.metadata(arm))

        return await self.call("ModelMetadata", "metadata", context, work)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        """Infer through the shared infer path (a pinned ``model_version``, else the router's choice)."""

        async def work(app: App, headers: dict[str, str]) -> pb.ModelInferResponse:
            return await self.infer(app, request, headers)

        return await self.call("ModelInfer", "infer", context, work)

    async def infer(self, app: App, request: pb.ModelInferRequest, headers: dict[str, str]) -> pb.ModelInferResponse:
        """Answer one ModelInfer; Refused with the REST answer's message and the matching code when it fails."""
        started = perf_counter()
        pinned = pinned_arm(app, request.model_name, request.model_version)
        inference, sticky = app.inference, headers.get("x-sticky-key")
        try:
            document, raw = grpc_codec.request_document(request)
            keys = entity_keys(document, inference.entities) if inference.lookup is not None else None
            decoded = None if keys is not None else grpc_codec.decode_document(document, app.config.features)
        except ProtocolError as exc:
            raise Refused(Code.INVALID_ARGUMENT, str(exc)) from None
        call = GrpcCall()
        if decoded is None:  # entity keys: the features are looked up first, as over REST
            assert keys is not None
            inference.keyed(call, document, keys, sticky, pinned=pinned, started=started, rest=False)
            data = None
        else:
            data = inference.submit(call, decoded, sticky, pinned, started)
        if data is None:
            data = await call.future
        status, answer = grpc_codec.read_answer(data)
        if status != 200:
            raise Refused(CODES.get(status, Code.UNKNOWN), str(answer.get("error", answer)))
        return grpc_codec.infer_response(answer, raw)

    async def call(
        self, method: str, route: str, context: Any, work: Callable[[App, dict[str, str]], Awaitable[Reply]]
    ) -> Reply:
        """Authorize the call for ``route``, run ``work``, count the outcome and answer (or abort with its code)."""
        app = self.app_of()
        headers = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        try:
            denied = app.authorize(route, headers.get("authorization"), headers.get("x-api-key"))
            if denied is not None:
                trailers = (("www-authenticate", denied.challenge),) if denied.challenge else ()
                raise Refused(CODES.get(denied.status, Code.PERMISSION_DENIED), denied.message, trailers)
            reply = await work(app, headers)
        except Refused as exc:
            refusal = exc
        except Exception as exc:  # a bug, not the caller's fault: say so without killing the server
            log.exception("gRPC %s failed", method)
            refusal = Refused(Code.INTERNAL, f"internal error: {exc}")
        else:
            app.grpc_codes[method, "OK"] += 1
            return reply
        app.grpc_codes[method, refusal.code.name] += 1
        await context.abort(refusal.code, refusal.message, refusal.trailers)
        raise AssertionError("grpc.aio's abort returned")  # it always raises

    @staticmethod
    async def _live(app: App, headers: dict[str, str]) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @staticmethod
    async def _ready(app: App, headers: dict[str, str]) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=app.ready)

    @staticmethod
    async def _server_metadata(app: App, headers: dict[str, str]) -> pb.ServerMetadataResponse:
        doc = server_metadata(mlspec.__version__)
        return pb.ServerMetadataResponse(name=doc["name"], version=doc["version"], extensions=doc["extensions"])


class GrpcListener:
    """The running gRPC server: where it listens, and how to stop it."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        """A started grpc.aio ``server`` bound to ``host``:``port``."""
        self.server = server
        self.host = host
        self.port = port

    @property
    def address(self) -> str:
        """host:port (an IPv6 host in brackets)."""
        return address(self.host, self.port)

    async def stop(self, grace: float) -> None:
        """Refuse new calls; let calls in flight finish for up to ``grace`` seconds, then cancel them."""
        await self.server.stop(grace)


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC takes it (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(app_of: Callable[[], App], host: str, port: int, tls: TlsConfig | None = None) -> GrpcListener:
    """Serve GRPCInferenceService on ``host``:``port`` (0: any free port) on the running loop, over TLS with
    ``tls``'s certificate when given; OSError when the address cannot be bound."""
    server = grpc.aio.server(options=OPTIONS)
    service.add_GRPCInferenceServiceServicer_to_server(InferenceService(app_of), server)
    wanted = address(host, port)
    try:
        if tls is None:
            bound = server.add_insecure_port(wanted)
        else:
            with open(tls.key_file, "rb") as key, open(tls.cert_file, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            bound = server.add_secure_port(wanted, credentials)
    except RuntimeError as exc:  # grpcio raises when the address cannot be bound
        raise OSError(f"cannot listen for gRPC on {wanted}: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {wanted}")
    await server.start()
    return GrpcListener(server, host, bound)
