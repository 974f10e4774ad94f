"""Answering infer requests: pick a variant, batch per variant, run the model, answer, log, mirror to a shadow."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlspec.serving.binary import binary_document, decode_binary, encode_binary
from mlspec.serving.config import ServingConfig
from mlspec.serving.feature_lookup import Lookup, LookupFailed, entity_keys, feature_rows, make_lookup
from mlspec.serving.http import Connection, Headers, Ticket, response
from mlspec.serving.metrics import ShadowStats
from mlspec.serving.protocol import (
    InferRequest,
    ProtocolError,
    decode_infer,
    encode_infer,
    error_body,
    infer_request,
    parse_body,
    request_with_rows,
    unknown_outputs,
)
from mlspec.serving.reqlog import RequestLog
from mlspec.serving.router import Arm, Router

perf_counter = time.perf_counter
NON_FINITE = "model output holds NaN or infinity"


def counted_error(codes: Counter[int], status: int, message: str) -> bytes:
    """An error response, counted under its status."""
    codes[status] += 1
    return response(status, error_body(message))


class Responder(Protocol):
    """Where an infer answer goes: an HTTP :class:`~mlspec.serving.http.Connection`, or a gRPC call
    (:mod:`~mlspec.serving.grpc_server`), so both front ends share one infer path."""

    def defer(self) -> Ticket:
        """A slot for the answer of the request being submitted, filled later by ``complete``."""
        ...

    def complete(self, ticket: Ticket, data: bytes) -> None:
        """The answer (a whole HTTP response) for ``ticket``."""
        ...


@dataclass(slots=True)
class Relay:
    """A responder whose slot was taken before the request was decoded (an entity-keyed request waits for its
    features first): its answer still goes in the connection's order."""

    conn: Responder
    ticket: Ticket

    def defer(self) -> Ticket:
        """The slot taken when the request arrived."""
        return self.ticket

    def complete(self, ticket: Ticket, data: bytes) -> None:
        """The answer, in that slot."""
        self.conn.complete(ticket, data)


@dataclass(slots=True)
class Pending:
    """An infer request waiting for its variant's batch."""

    request: InferRequest
    conn: Responder
    ticket: Ticket
    started: float


def run_model(arm: Arm, rows: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The model's output for ``rows`` and "", or None and what went wrong."""
    try:
        assert arm.model is not None
        return arm.model.run(rows), ""
    except Exception as exc:  # onnxruntime raises its own types
        return None, f"inference failed: {exc}"


class Inference:
    """The infer path of one server: routing to a variant, dynamic batching, answers, request log, shadow."""

    def __init__(self, codes: Counter[int], shadow: ShadowStats, on_phase_change: Callable[[], None]) -> None:
        """An infer path counting responses in ``codes`` and shadow comparisons in ``shadow``; ``on_phase_change``
        is called when an answer moves the rollout to another phase. Call configure before serving."""
        self.codes = codes
        self.on_phase_change = on_phase_change
        self.shadow = shadow
        self.queues: dict[Arm, list[Pending]] = {}
        self.shadow_items: list[tuple[Arm, np.ndarray, np.ndarray]] = []
        self.flush_scheduled = False
        self.shadow_scheduled = False
        self.loop: Any = None
        self.entities: tuple[str, ...] = ()
        self.impute = False
        self.lookup: Lookup | None = None  # set by configure when the Deployment names its FeatureService
        self.lookup_pool: ThreadPoolExecutor | None = None

    def configure(self, config: ServingConfig, router: Router, reqlog: RequestLog | None) -> None:
        """Serve ``config`` through ``router`` from now on, sampling answers into ``reqlog`` (if any)."""
        self.features = config.features
        self.batching = config.batching
        self.max_batch = config.max_batch
        self.router = router
        self.sticky_key = router.rollout.get("sticky_key") if config.strategy == "ab" else None
        self.reqlog = reqlog
        self.log_rate = reqlog.sample_rate if reqlog is not None else 0.0
        self.entities = config.lookup.entities if config.lookup is not None else ()
        self.impute = config.lookup is not None and config.lookup.missing == "impute"
        self.lookup = make_lookup(config.lookup) if config.lookup is not None else None
        if self.lookup_pool is not None:
            self.lookup_pool.shutdown(wait=False)
        # Feast's SDK store is used from one thread at a time; a feature server takes concurrent requests
        workers = 1 if config.lookup is not None and config.lookup.repo is not None else 8
        self.lookup_pool = ThreadPoolExecutor(workers, "lookup") if self.lookup is not None else None

    def infer(self, conn: Connection, body: bytes, headers: Headers, pinned: Arm | None = None) -> bytes | None:
        """Answer an infer request (to ``pinned`` when the URL names a version); None when it waits for a batch."""
        started = perf_counter()
        try:
            if self.lookup is not None:  # entity keys may come in JSON or as binary tensor data
                binary = headers.binary_length
                doc = parse_body(body) if binary is None else binary_document(body, binary)
                keys = entity_keys(doc, self.entities)
                if keys is not None:
                    self.keyed(conn, doc, keys, headers.sticky, pinned=pinned, started=started)
                    return None  # answered once its features arrive
                request = infer_request(doc, self.features)
            elif headers.binary_length is None:
                request = decode_infer(body, self.features)
            else:  # the binary tensor data extension
                request = decode_binary(body, headers.binary_length, self.features)
        except ProtocolError as exc:
            return counted_error(self.codes, 400, str(exc))
        return self.submit(conn, request, headers.sticky, pinned, started)

    def keyed(
        self,
        conn: Responder,
        doc: dict[str, Any],
        keys: dict[str, list[Any]],
        sticky: str | None,
        *,
        pinned: Arm | None,
        started: float,
        rest: bool = True,
    ) -> None:
        """Answer an entity-keyed request: its features are fetched off the event loop, then it is answered like
        any other, in the connection's order (``rest``: False for a gRPC call, whose answer is never REST's binary
        body)."""
        lookup = self.lookup
        assert lookup is not None
        relay = Relay(conn, conn.defer())

        def fetched(future: Any) -> None:
            try:
                rows = feature_rows(future.result(), self.features, keys, impute=self.impute)
                request = request_with_rows(doc, rows)
                request.binary_output = request.binary_output and rest
            except LookupFailed as exc:
                relay.complete(relay.ticket, counted_error(self.codes, exc.status, str(exc)))
                return
            except ProtocolError as exc:
                relay.complete(relay.ticket, counted_error(self.codes, 400, str(exc)))
                return
            answer = self.submit(relay, request, sticky, pinned, started)
            if answer is not None:
                relay.complete(relay.ticket, answer)

        self.loop.run_in_executor(self.lookup_pool, lookup.fetch, keys).add_done_callback(fetched)

    def submit(
        self, conn: Responder, request: InferRequest, sticky: str | None, pinned: Arm | None, started: float
    ) -> bytes | None:
        """Answer a decoded request: on ``pinned``, else on the router's choice (by the sticky key parameter, else
        ``sticky``); None when it waits for its batch (``conn.complete`` gets the answer)."""
        if pinned is not None:
            arm = pinned
            request.routed = False
            if arm.model is None:
                return counted_error(self.codes, 503, f"variant {arm.name} is {arm.state}")
        else:
            if self.sticky_key is not None and request.parameters:
                value = request.parameters.get(self.sticky_key)
                if value is not None:
                    sticky = str(value)
            chosen = self.router.choose(sticky)
            if chosen is None or chosen.model is None:
                return counted_error(self.codes, 503, "no variant is ready to answer")
            arm = chosen
        if request.outputs and arm.model is not None:
            unknown = unknown_outputs(request.outputs, arm.model.output_name)
            if unknown:
                return counted_error(self.codes, 400, unknown)
        if self.batching:
            queue = self.queues.get(arm)
            if queue is None:
                queue = self.queues[arm] = []
            queue.append(Pending(request, conn, conn.defer(), started))
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self.flush)
            return None
        rows = request.rows
        arm.stats.batch.observe(len(rows))
        out, problem = run_model(arm, rows)
        return self.answer(arm, request, out, problem, started)

    def flush(self) -> None:
        """Run every queued request: one session.run per variant over the concatenated rows (max_batch rows)."""
        self.flush_scheduled = False
        queues, self.queues = self.queues, {}
        limit = self.max_batch
        for arm, items in queues.items():
            start = 0
            while start < len(items):
                chunk: list[Pending] = []
                rows_total = 0
                while start < len(items) and (not chunk or rows_total + len(items[start].request.rows) <= limit):
                    chunk.append(items[start])
                    rows_total += len(items[start].request.rows)
                    start += 1
                self.run_chunk(arm, chunk, rows_total)

    def run_chunk(self, arm: Arm, chunk: list[Pending], rows_total: int) -> None:
        """Run one batch of queued requests and answer each; a failing batch is retried request by request."""
        if len(chunk) == 1:
            item = chunk[0]
            arm.stats.batch.observe(rows_total)
            out, problem = run_model(arm, item.request.rows)
            item.conn.complete(item.ticket, self.answer(arm, item.request, out, problem, item.started))
            return
        arm.stats.batch.observe(rows_total)
        out, problem = run_model(arm, np.concatenate([p.request.rows for p in chunk]))
        if out is None:  # isolate the failing request(s)
            for item in chunk:
                self.run_chunk(arm, [item], len(item.request.rows))
            return
        offset = 0
        for item in chunk:
            n = len(item.request.rows)
            part = out[offset : offset + n]
            offset += n
            item.conn.complete(item.ticket, self.answer(arm, item.request, part, problem, item.started))

    def answer(self, arm: Arm, request: InferRequest, out: np.ndarray | None, problem: str, started: float) -> bytes:
        """The response to one request; counts it, tells the router, samples it into the log, mirrors it."""
        stats = arm.stats
        status = 200
        binary = b""  # the whole response, when it goes as binary tensor data
        if out is not None:
            try:
                if request.binary_output:
                    binary = encode_binary(arm.prefix, out, request.id)
                else:
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
        if request.routed and self.router.record(arm, latency, status != 200):
            self.on_phase_change()
        if status == 200 and out is not None:
            if self.log_rate and random.random() < self.log_rate and self.reqlog is not None:
                self.reqlog.add(arm.name, arm.version, request.rows, out)
            target = self.router.mirror()
            if target is not None and target is not arm and target.model is not None:
                self.shadow_items.append((target, request.rows, out))
                if not self.shadow_scheduled:
                    self.shadow_scheduled = True
                    self.loop.call_soon(self.shadow_flush)
        return binary or response(status, body)

    def shadow_flush(self) -> None:
        """Run the mirrored requests on the challenger (after their answers were written) and compare."""
        self.shadow_scheduled = False
        items, self.shadow_items = self.shadow_items, []
        if not items:
            return
        arm = items[0][0]
        rows = np.concatenate([i[1] for i in items])
        stable = np.concatenate([i[2] for i in items])
        started = perf_counter()
        out, _problem = run_model(arm, rows)
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
