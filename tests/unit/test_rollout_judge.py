"""The cluster canary controller's parts: judge() against the laptop router's rules and words, the Prometheus
client's errors, the controller failing safe, run() and SIGTERM, and the KServe actuator's patches."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from mlspec.serving.prometheus import Prometheus, PrometheusError, selector
from mlspec.serving.rollout_controller import (
    ADVANCE,
    PROMOTE,
    ROLL_BACK,
    WAIT,
    ActuationError,
    CanaryController,
    CanaryQueries,
    CanaryState,
    Observation,
    Thresholds,
    Unavailable,
    judge,
    run,
)
from mlspec.serving.rollout_kserve import KServeActuator, KubeApi

STEPS = [20, 50, 100]
LIMITS = Thresholds(max_error_rate=0.01, max_p99_ms=50.0, min_requests=100, interval="5m")
GOOD = Observation(requests=240.0, errors=0.0, p99_seconds=0.004)


# --- judge(): the laptop router's rules -------------------------------------------------------------------


def test_a_healthy_window_before_the_interval_waits_and_opens_the_next_window() -> None:
    state = CanaryState.begin(1000.0)
    decision = judge(state, STEPS, LIMITS, GOOD, now=1060.0)
    assert decision.action == WAIT and decision.percent == 20
    assert decision.state == CanaryState(0, 1000.0, 1060.0, 240.0, 0.0)  # the window was held and counted
    assert (
        decision.reason == "step 1 of 3 at 20%: 240 canary requests held so far; judged again after 5m (60 s watched)"
    )
    assert decision.window == (1000.0, 1060.0) and decision.observed == GOOD


def test_no_judgment_before_min_requests_however_long_the_step_ran_and_however_bad() -> None:
    state = CanaryState.begin(0.0)
    for observed in (Observation(99.0, 0.0, 0.004), Observation(99.0, 99.0, 9.0), Observation(0.0, 0.0, None)):
        decision = judge(state, STEPS, LIMITS, observed, now=86400.0)
        assert decision.action == WAIT and decision.state == state, decision
        assert f"{observed.requests:.0f} of 100 canary requests in this window; waiting for more" in decision.reason
    unscraped = judge(state, STEPS, LIMITS, Observation(None, 0.0, None), now=86400.0)  # no samples in the window
    assert unscraped.action == WAIT and unscraped.state == state
    assert unscraped.reason == "step 1 of 3 at 20%: no samples of the canary in this window yet; waiting for more"


def test_a_breach_rolls_back_at_once_even_before_the_interval() -> None:
    state = CanaryState.begin(1000.0)
    slow = judge(state, STEPS, LIMITS, Observation(240.0, 0.0, 0.120), now=1001.0)
    assert (slow.action, slow.percent) == (ROLL_BACK, 0)
    assert slow.reason == "p99 120.0 ms > max 50 ms over 240 canary requests"
    failing = judge(state, STEPS, LIMITS, Observation(240.0, 5.0, 0.004), now=1001.0)
    assert (failing.action, failing.percent) == (ROLL_BACK, 0)
    assert failing.reason == "error rate 0.02 > max 0.01 over 240 canary requests"
    exactly = judge(state, STEPS, LIMITS, Observation(200.0, 2.0, 0.050), now=1001.0)  # at the limits: holds
    assert exactly.action == WAIT


def test_a_step_advances_once_its_interval_passed_and_a_window_then_holds() -> None:
    state = CanaryState(step=0, step_started=0.0, window_started=290.0, step_requests=500.0, step_errors=1.0)
    decision = judge(state, STEPS, LIMITS, Observation(100.0, 0.0, 0.004), now=300.0)
    assert (decision.action, decision.percent) == (ADVANCE, 50)
    assert decision.state == CanaryState.begin(300.0, step=1)
    assert decision.reason == "step 1 held for 5m (600 requests, error rate 0.00, p99 4.0 ms); now 50%"


def test_the_last_step_promotes() -> None:
    state = CanaryState(step=2, step_started=0.0, window_started=299.0)
    decision = judge(state, STEPS, LIMITS, GOOD, now=300.0)
    assert (decision.action, decision.percent) == (PROMOTE, 100)
    assert decision.reason == "error rate 0.00, p99 4.0 ms held at 100% for 5m (240 canary requests)"


def test_without_numbers_nothing_moves_and_the_reason_says_why() -> None:
    state = CanaryState(step=1, step_started=0.0, window_started=0.0, step_requests=400.0)
    decision = judge(state, STEPS, LIMITS, Unavailable("Prometheus at http://p:9090 is unreachable: refused"), 1e6)
    assert decision.action == WAIT and decision.percent == 50 and decision.state == state
    assert decision.reason == (
        "step 2 of 3 at 50%: not judged, traffic unchanged: Prometheus at http://p:9090 is unreachable: refused"
    )
    no_latency = judge(state, STEPS, LIMITS, Observation(400.0, 0.0, None), 1e6)
    assert no_latency.action == WAIT and "no latency histogram" in no_latency.reason


def test_thresholds_and_reasons_are_the_laptop_routers() -> None:
    """Same defaults as router.Analysis, and the same reason, word for word, on the same window."""
    pytest.importorskip("onnxruntime")
    from mlspec.serving.metrics import VariantStats
    from mlspec.serving.router import LOADED, Analysis, Arm, CanaryRouter

    for rollout in ({"strategy": "canary", "steps": [10]}, {"analysis": {"min_requests": 0, "interval": "2h"}}):
        assert vars(Thresholds.from_rollout(rollout)) == vars(Analysis.from_rollout(rollout))
    for latency, errors, n in ((0.120, 0, 240), (0.004, 5, 240)):
        arms = {name: Arm(name, name, v, VariantStats()) for name, v in (("stable", "1"), ("canary", "2"))}
        rollout = {"strategy": "canary", "steps": STEPS, "analysis": {"max_p99_ms": 50, "min_requests": n}}
        router = CanaryRouter(arms, rollout)
        arms["canary"].state = LOADED
        router.on_state(arms["canary"])
        for i in range(n):
            router.record(arms["canary"], latency, i < errors)
        assert router.phase == "rolled_back"
        ours = judge(
            CanaryState.begin(0.0), STEPS, Thresholds.from_rollout(rollout), Observation(n, errors, latency), 1
        )
        assert ours.reason == router.reason


# --- PromQL ----------------------------------------------------------------------------------------------


def test_the_queries_sum_every_replica_of_the_canary_version() -> None:
    queries = CanaryQueries("fraud-api", "7", {"namespace": "ml-prod"})
    assert queries.requests(30) == (
        'sum(increase(mlspec_requests_total{deployment="fraud-api",version="7",namespace="ml-prod"}[30s]))'
    )
    assert queries.errors(30).startswith("sum(increase(mlspec_request_errors_total{")
    assert queries.p99(30) == (
        "histogram_quantile(0.99, sum by (le) (increase(mlspec_request_duration_seconds_bucket"
        '{deployment="fraud-api",version="7",namespace="ml-prod"}[30s])))'
    )
    assert selector("m", deployment='a"b\\c') == 'm{deployment="a\\"b\\\\c"}'  # a label value cannot break out


# --- a fake Prometheus and a fake Kubernetes API ---------------------------------------------------------


class Fake:
    """An HTTP server answering from ``answer(method, path, query, body) -> (status, json)``; records requests."""

    def __init__(self, answer: Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]) -> None:
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parsed = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                fake.requests.append(
                    {"method": self.command, "path": parsed.path, "query": query, "headers": dict(self.headers),
                     "body": json.loads(body) if body else None}
                )  # fmt: skip
                status, data = answer(self.command, parsed.path, query, body)
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_PATCH = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[Callable[..., Fake]]:
    """Fake HTTP servers made by the test, closed after it."""
    made: list[Fake] = []

    def make(answer: Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]) -> Fake:
        made.append(Fake(answer))
        return made[-1]

    yield make
    for server in made:
        server.close()


def vector(value: str) -> tuple[int, Any]:
    """An instant-vector answer with one sample of ``value``."""
    return 200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, value]}]}}


class Recorder:
    """An actuator that records every call (and fails while ``failing`` is set)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.failing = ""

    def _call(self, name: str, arg: Any) -> None:
        if self.failing:
            raise ActuationError(self.failing)
        self.calls.append((name, arg))

    def set_canary_percent(self, percent: int) -> None:
        """Record a step."""
        self._call("set_canary_percent", percent)

    def promote(self) -> None:
        """Record a promotion."""
        self._call("promote", None)

    def roll_back(self, reason: str) -> None:
        """Record a rollback and its reason."""
        self._call("roll_back", reason)


def closed_port() -> str:
    """The URL of a loopback port nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_the_client_says_what_prometheus_refused_and_when_it_cannot_be_reached(fake: Callable[..., Fake]) -> None:
    bad = fake(lambda *_: (400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}))
    with pytest.raises(PrometheusError, match=r"answered HTTP 400: bad_data: parse error at char 5"):
        Prometheus(bad.url).query("sum(")
    with pytest.raises(PrometheusError, match=r"is unreachable"):
        Prometheus(closed_port(), timeout=2).query("up")
    nan = fake(lambda *_: vector("NaN"))
    assert Prometheus(nan.url).value("histogram_quantile(0.99, x)") is None
    matrix = fake(lambda *_: (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}))
    with pytest.raises(PrometheusError, match="not an instant vector"):
        Prometheus(matrix.url).query("up[1m]")


def test_an_unreachable_prometheus_moves_nothing(fake: Callable[..., Fake]) -> None:
    recorder = Recorder()
    rollout = {"steps": STEPS, "analysis": {"min_requests": 1, "interval": "1s"}}
    controller = CanaryController(Prometheus(closed_port(), timeout=2), CanaryQueries("d", "2"), rollout, recorder)
    assert controller.once().reason == "canary started; step 1 of 3 at 20%"
    for _ in range(3):
        decision = controller.once()
        assert decision.action == WAIT and "not judged, traffic unchanged: Prometheus at" in decision.reason
    assert recorder.calls == [("set_canary_percent", 20)] and controller.phase == "progressing"


def test_a_decision_the_actuator_could_not_apply_is_judged_again(fake: Callable[..., Fake]) -> None:
    answers = {"mlspec_requests_total": "500", "mlspec_request_errors_total": "50", "histogram_quantile": "0.001"}
    prometheus = fake(lambda _m, _p, q, _b: vector(next(v for k, v in answers.items() if k in q["query"])))
    recorder = Recorder()
    rollout = {"steps": STEPS, "analysis": {"min_requests": 100}}
    controller = CanaryController(Prometheus(prometheus.url), CanaryQueries("d", "2"), rollout, recorder)
    controller.once()
    recorder.failing = "HTTP 403: forbidden"
    failed = controller.once()
    assert failed.action == WAIT and controller.phase == "progressing"
    assert (
        failed.reason
        == "roll_back not applied (error rate 0.10 > max 0.01 over 500 canary requests): HTTP 403: forbidden"
    )
    recorder.failing = ""
    decision = controller.once()
    assert decision.action == ROLL_BACK and controller.phase == "rolled_back"
    assert recorder.calls[-1] == ("roll_back", "error rate 0.10 > max 0.01 over 500 canary requests")
    assert controller.once() is decision  # decided: nothing more happens
    sent = [r["query"]["query"] for r in prometheus.requests]
    assert (
        'sum(increase(mlspec_requests_total{deployment="d",version="2"}[' in sent[0]
        and "time" in prometheus.requests[0]["query"]
    )


def test_run_stops_on_sigterm_and_leaves_the_traffic_where_it_is() -> None:
    recorder = Recorder()
    controller = CanaryController(
        Prometheus(closed_port(), timeout=1), CanaryQueries("d", "2"), {"steps": STEPS}, recorder
    )
    before = signal.getsignal(signal.SIGTERM)

    def terminate() -> None:
        deadline = time.monotonic() + 10
        while len(controller.history) < 2 and time.monotonic() < deadline:  # run() has installed its handler
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()
    decision = run(controller, poll=0.05)
    assert decision.action == WAIT and not controller.finished
    assert recorder.calls == [("set_canary_percent", 20)]
    assert signal.getsignal(signal.SIGTERM) == before


# --- the KServe actuator ---------------------------------------------------------------------------------


def test_the_kserve_actuator_patches_canary_traffic_percent(fake: Callable[..., Fake]) -> None:
    api = fake(lambda *_: (200, {"kind": "InferenceService"}))
    actuator = KServeActuator(KubeApi(api.url, token="t0k3n"), "ml-prod", "fraud-api")
    actuator.set_canary_percent(20)
    actuator.promote()
    actuator.roll_back("error rate 1.00 > max 0.01 over 40 canary requests")
    assert {r["path"] for r in api.requests} == {
        "/apis/serving.kserve.io/v1beta1/namespaces/ml-prod/inferenceservices/fraud-api"
    }
    assert all(r["method"] == "PATCH" and r["query"] == {"fieldManager": "mlspec-rollout"} for r in api.requests)
    assert all(r["headers"]["Content-Type"] == "application/merge-patch+json" for r in api.requests)
    assert all(r["headers"]["Authorization"] == "Bearer t0k3n" for r in api.requests)
    percents = [r["body"]["spec"]["predictor"]["canaryTrafficPercent"] for r in api.requests]
    assert percents == [20, None, 0]  # None removes the field: KServe rolls the latest revision out
    annotations = [r["body"]["metadata"]["annotations"] for r in api.requests]
    assert annotations[2] == {
        "mlspec.dev/rollout-phase": "rolled_back",
        "mlspec.dev/rollout-reason": "error rate 1.00 > max 0.01 over 40 canary requests",
    }
    assert annotations[1]["mlspec.dev/rollout-phase"] == "promoted"


def test_the_kserve_actuator_says_what_the_api_server_refused(fake: Callable[..., Fake], tmp_path: Path) -> None:
    message = 'inferenceservices "fraud-api" is forbidden: User "system:serviceaccount:ml-prod:x" cannot patch'
    api = fake(lambda *_: (403, {"kind": "Status", "status": "Failure", "message": message, "code": 403}))
    with pytest.raises(ActuationError, match=r"PATCH .*fraud-api.*: HTTP 403: inferenceservices .* cannot patch"):
        KServeActuator(KubeApi(api.url), "ml-prod", "fraud-api").set_canary_percent(50)
    with pytest.raises(ActuationError, match="KUBERNETES_SERVICE_HOST is not set"):
        KubeApi.in_cluster(tmp_path, environ={})
    (tmp_path / "token").write_text("abc\n")
    (tmp_path / "namespace").write_text("ml-prod\n")
    inside = KubeApi.in_cluster(
        tmp_path, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    )
    assert (inside.url, inside.token, inside.namespace) == ("https://10.0.0.1:6443", "abc", "ml-prod")
    with pytest.raises(ActuationError, match="cannot read the cluster's CA"):
        inside.context()
