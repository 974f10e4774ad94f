"""Canary analysis on a cluster, proven with a real Prometheus.

Replicas of the stable and the canary versions run as real model-server processes (each its own process and
config, one version each, as KServe runs a revision's pods); Prometheus scrapes every one of them each second;
the test plays KServe's router, splitting traffic between the revisions by the current canaryTrafficPercent
and spreading each revision's share over its pods; and the controller judges from what Prometheus sums over the
canary's pods, never from one pod.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from mlspec.serving import process
from mlspec.serving.prometheus import Prometheus, PrometheusError
from mlspec.serving.rollout_controller import (
    WAIT,
    CanaryController,
    CanaryQueries,
    CanaryState,
    Observation,
    judge,
    run,
)
from tests import services
from tests.k8s_schemas import validate_core
from tests.unit.test_serving import CANARY_W, FEATURES, STABLE_W, url_of, variant

pytestmark = pytest.mark.slow
DEPLOYMENT = "fraud-api"
STABLE, GOOD, FAILING = "1", "2", "3"  # the versions: stable, a good canary, a canary whose model answers NaN
REPLICAS = {STABLE: 2, GOOD: 2, FAILING: 2}
SRC = str(Path(__file__).resolve().parents[2] / "compiler")


@dataclass
class Replica:
    """One pod of a revision: a model-server process serving one version."""

    version: str
    url: str
    pid: int

    @property
    def instance(self) -> str:
        """host:port, as Prometheus labels the target."""
        return self.url.removeprefix("http://")


@dataclass
class Fleet:
    """Every replica, the Prometheus that scrapes them, and the label that scopes queries to this module."""

    prometheus: Prometheus
    suite: str
    replicas: list[Replica]

    def of(self, version: str) -> list[Replica]:
        """The replicas serving ``version``."""
        return [r for r in self.replicas if r.version == version]

    def queries(self, version: str) -> CanaryQueries:
        """The controller's queries for ``version``, scoped to this module's targets."""
        return CanaryQueries(DEPLOYMENT, version, {"suite": self.suite})


def start_replica(folder: Path, model: dict[str, Any]) -> Replica:
    """A model server with its own config and log in ``folder``, direct rollout, on a free loopback port."""
    folder.mkdir(parents=True)
    config = {
        "deployment": DEPLOYMENT, "model_name": "fraud-detector", "host": "127.0.0.1", "port": 0,
        "features": FEATURES, "variants": [model], "rollout": {"strategy": "direct"},
        "log": {"path": str(folder / "requests.jsonl"), "sample_rate": 0.0, "enabled": False},
        "status_path": str(folder / "rollout.json"),
    }  # fmt: skip
    path = folder / "serving.json"
    path.write_text(json.dumps(config))
    pid = process.start(path, folder / "server.log", timeout=60)
    return Replica(model["version"], url_of(folder / "server.log"), pid)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` did not happen."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:g} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Every replica started and scraped by Prometheus for this module; stopped after it."""
    url, targets = services.prometheus()
    tmp = tmp_path_factory.mktemp("fleet")
    models = {
        STABLE: variant(tmp, "stable", STABLE, STABLE_W),
        GOOD: variant(tmp, "stable", GOOD, CANARY_W),  # on KServe every pod's one variant is "stable"
        FAILING: variant(tmp, "stable", FAILING, [-1.0, -1.0, -1.0], sqrt=True),  # NaN -> 500 for positive rows
    }
    plan = [(version, i) for version, count in REPLICAS.items() for i in range(count)]
    replicas: list[Replica] = []
    errors: list[BaseException] = []

    def start(version: str, index: int) -> None:
        try:
            replicas.append(start_replica(tmp / f"v{version}-{index}", models[version]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=item) for item in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    suite = uuid.uuid4().hex[:12]
    target_file = targets / f"rollout-{suite}.json"
    try:
        assert not errors, errors
        # "namespace" as Prometheus's Kubernetes discovery (a PodMonitor) labels the pods of ml-prod
        listing = [{"targets": [r.instance for r in replicas], "labels": {"suite": suite, "namespace": "ml-prod"}}]
        (targets / f".{suite}.tmp").write_text(json.dumps(listing))
        (targets / f".{suite}.tmp").rename(target_file)  # Prometheus never reads half a file
        prometheus = Prometheus(url)
        scraped = f'count(up{{suite="{suite}"}} == 1)'
        wait_for(lambda: prometheus.value(scraped) == len(plan), "Prometheus did not scrape every replica")
        yield Fleet(prometheus, suite, replicas)
    finally:
        target_file.unlink(missing_ok=True)
        for replica in replicas:
            process.stop(replica.pid)


class KServeRouter:
    """Plays KServe: splits requests between the revisions by the canary's percent, round robin over each
    revision's pods; ``percent`` comes from wherever the controller writes it."""

    def __init__(self, fleet: Fleet, canary: str, percent: Callable[[], int], rate: float = 100.0) -> None:
        self.pods = {"stable": fleet.of(STABLE), "canary": fleet.of(canary)}
        self.percent, self.rate = percent, rate
        self.codes: Counter[tuple[str, int]] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [[1.0, 2.0, 3.0]]}]}
        ).encode()

    def __enter__(self) -> KServeRouter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _drive(self) -> None:
        connections: dict[str, http.client.HTTPConnection] = {}
        turn = Counter[str]()
        while not self.stop.is_set():
            began = time.monotonic()
            revision = "canary" if random.random() * 100 < self.percent() else "stable"
            pods = self.pods[revision]
            pod = pods[turn[revision] % len(pods)]
            turn[revision] += 1
            conn = connections.setdefault(pod.url, http.client.HTTPConnection(*pod.instance.split(":"), timeout=10))
            try:
                conn.request("POST", f"/v2/models/{DEPLOYMENT}/infer", self.body, {"Content-Type": "application/json"})
                reply = conn.getresponse()
                reply.read()
                self.codes[(revision, reply.status)] += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                connections.pop(pod.url)
            self.stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - began)))
        for conn in connections.values():
            conn.close()


@dataclass
class Recorder:
    """The actuator stand-in: records every call and keeps the percent the router reads."""

    percent: int = 0
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def set_canary_percent(self, percent: int) -> None:
        """Give the canary ``percent`` of the traffic."""
        self.percent = percent
        self.calls.append(("set_canary_percent", percent))

    def promote(self) -> None:
        """All traffic to the canary."""
        self.percent = 100
        self.calls.append(("promote", None))

    def roll_back(self, reason: str) -> None:
        """All traffic back to stable."""
        self.percent = 0
        self.calls.append(("roll_back", reason))


def judge_until_decided(controller: CanaryController, seconds: float = 40.0) -> None:
    """run() the controller (polling every 0.25 s) until it decides, or give up after ``seconds``."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        run(controller, poll=0.25, stop=stop)
    finally:
        timer.cancel()


def test_a_good_canary_is_promoted_through_every_step_from_every_replicas_metrics(fleet: Fleet) -> None:
    rollout = {"strategy": "canary", "steps": [20, 50, 100],
               "analysis": {"max_error_rate": 0.01, "max_p99_ms": 5000, "min_requests": 30, "interval": "2s"}}  # fmt: skip
    recorder = Recorder()
    controller = CanaryController(fleet.prometheus, fleet.queries(GOOD), rollout, recorder)
    with KServeRouter(fleet, GOOD, lambda: recorder.percent) as router:
        judge_until_decided(controller)
    reasons = [d.reason for d in controller.history]
    assert controller.phase == "promoted", reasons
    assert recorder.calls == [("set_canary_percent", 20), ("set_canary_percent", 50), ("set_canary_percent", 100),
                              ("promote", None)]  # fmt: skip
    assert any(r.startswith("step 1 held for 2s (") and r.endswith("; now 50%") for r in reasons), reasons
    assert reasons[-1].startswith("error rate 0.00, p99 ") and " held at 100% for 2s (" in reasons[-1]
    assert router.codes[("canary", 200)] >= 3 * 30 and router.codes[("stable", 200)] > 0
    assert {code for _revision, code in router.codes} == {200}
    assert_one_replica_would_not_have_been_enough(fleet, controller, min_requests=30)


def assert_one_replica_would_not_have_been_enough(
    fleet: Fleet, controller: CanaryController, min_requests: int
) -> None:
    """Some window the controller judged held ``min_requests`` canary requests only summed over the replicas: each
    pod alone saw fewer, and judge() on one pod's numbers would still have waited."""
    judged = [d for d in controller.history if d.observed is not None and d.window is not None
              and (d.observed.requests or 0) >= min_requests]  # fmt: skip
    assert judged, [d.reason for d in controller.history]
    pods = {r.instance for r in fleet.of(GOOD)}
    proofs = []
    for decision in judged:
        assert decision.window is not None and decision.observed is not None
        since, until = decision.window
        seconds = max(1, math.ceil(until - since))  # as observe() asks
        selector = fleet.queries(GOOD).matching("mlspec_requests_total")
        samples = fleet.prometheus.query(f"sum by (instance) (increase({selector}[{seconds}s]))", at=until)
        per_pod = {sample.labels["instance"]: sample.value for sample in samples}
        assert set(per_pod) <= pods
        assert sum(per_pod.values()) == pytest.approx(decision.observed.requests)  # the sum is over every pod
        if len(per_pod) == len(pods) and max(per_pod.values()) < min_requests:
            busiest = max(per_pod.values())
            alone = judge(
                CanaryState.begin(since), controller.steps, controller.limits, Observation(busiest, 0.0, 0.001), until
            )
            assert alone.action == WAIT and "waiting for more" in alone.reason
            proofs.append((decision.observed.requests, per_pod))
    assert proofs, [(d.observed, d.window) for d in judged]


def test_a_slow_canary_is_rolled_back_from_the_summed_histograms(fleet: Fleet) -> None:
    rollout = {"strategy": "canary", "steps": [50, 100],
               "analysis": {"max_error_rate": 0.01, "max_p99_ms": 0.001, "min_requests": 20, "interval": "1s"}}  # fmt: skip
    recorder = Recorder()
    controller = CanaryController(fleet.prometheus, fleet.queries(GOOD), rollout, recorder)
    with KServeRouter(fleet, GOOD, lambda: recorder.percent):
        judge_until_decided(controller)
    assert controller.phase == "rolled_back", [d.reason for d in controller.history]
    assert recorder.calls[0] == ("set_canary_percent", 50) and recorder.calls[-1][0] == "roll_back"
    reason = str(recorder.calls[-1][1])
    assert reason.startswith("p99 ") and " ms > max 0.001 ms over " in reason and reason.endswith(" canary requests")
    assert recorder.percent == 0


def reply_json(handler: BaseHTTPRequestHandler, status: int, raw: bytes) -> None:
    """Answer ``raw`` (JSON) with ``status``, as the API server does."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


class FakeKServe:
    """A Kubernetes API holding one InferenceService; applies JSON merge patches as the API server does."""

    def __init__(self) -> None:
        self.isvc: dict[str, Any] = {"metadata": {"annotations": {}}, "spec": {"predictor": {}}}
        self.patches: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                patch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.patches.append(patch)
                merge(fake.isvc, patch)
                raw = json.dumps(fake.isvc).encode()
                reply_json(self, 200, raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def canary_percent(self) -> int:
        """KServe's split: no field (yet, or after a promotion) sends everything to the latest revision."""
        value = self.isvc["spec"]["predictor"].get("canaryTrafficPercent")
        return 0 if not self.patches else 100 if value is None else int(value)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386: null removes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def test_a_failing_canary_is_rolled_back_by_the_controller_process_through_the_kubernetes_api(fleet: Fleet) -> None:
    kserve = FakeKServe()
    rollout = {"strategy": "canary", "steps": [20, 50, 100], "analysis": {"max_error_rate": 0.01, "min_requests": 20}}
    command = [
        sys.executable, "-m", "mlspec.serving.rollout_kserve", "--prometheus", fleet.prometheus.url,
        "--kube-api", kserve.url, "--namespace", "ml-prod", "--inference-service", DEPLOYMENT,
        "--deployment", DEPLOYMENT, "--version", FAILING, "--match", f"suite={fleet.suite}",
        "--rollout", json.dumps(rollout), "--poll", "0.25",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        with KServeRouter(fleet, FAILING, kserve.canary_percent) as router:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    finally:
        kserve.server.shutdown()
        kserve.server.server_close()
    assert done.returncode == 1, done.stderr  # 1: rolled back
    assert [p["spec"]["predictor"]["canaryTrafficPercent"] for p in kserve.patches] == [20, 0]
    annotations = kserve.isvc["metadata"]["annotations"]
    assert annotations["mlspec.dev/rollout-phase"] == "rolled_back"
    assert annotations["mlspec.dev/rollout-reason"].startswith("error rate 1.00 > max 0.01 over ")
    assert f"roll_back {DEPLOYMENT} v{FAILING}: rolled_back -> canary 0%: error rate 1.00" in done.stderr
    assert router.codes[("canary", 500)] >= 20 and ("canary", 200) not in router.codes


def test_prometheus_says_why_it_refused_a_query(fleet: Fleet) -> None:
    with pytest.raises(PrometheusError, match=r"answered HTTP 400: bad_data: "):
        fleet.prometheus.query("sum(")


class FakeNamespace(FakeKServe):
    """The API server's view of one namespace for the namespace controller: lists the InferenceService, and plays
    KServe's status: a revision whose canaryTrafficPercent is removed becomes the rolled-out one."""

    def __init__(self, isvc: dict[str, Any], revisions: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__()
        self.isvc, fake = isvc, self
        self.revisions = revisions or {}  # name -> annotations of the Knative Revisions
        handler = self.server.RequestHandlerClass
        patch = handler.do_PATCH  # type: ignore[attr-defined]

        def do_patch(self: BaseHTTPRequestHandler) -> None:
            patch(self)
            predictor = fake.isvc["status"]["components"]["predictor"]
            if "canaryTrafficPercent" not in fake.isvc["spec"]["predictor"]:
                predictor["latestRolledoutRevision"] = predictor["latestReadyRevision"]

        def do_post(self: BaseHTTPRequestHandler) -> None:
            event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/apis/events.k8s.io/v1/namespaces/ml-prod/events", self.path
            fake.events.append(event)
            raw = json.dumps({**event, "metadata": {**event["metadata"], "name": f"e{len(fake.events)}"}}).encode()
            reply_json(self, 201, raw)

        def do_get(self: BaseHTTPRequestHandler) -> None:
            revision = self.path.rsplit("/", 1)[-1]
            if "/serving.knative.dev/v1/namespaces/ml-prod/revisions/" in self.path:
                found = {"metadata": {"name": revision, "annotations": fake.revisions[revision]}}
                raw = json.dumps(found).encode()
            else:
                raw = json.dumps({"items": [fake.isvc]}).encode()
            reply_json(self, 200, raw)

        handler.do_PATCH, handler.do_GET, handler.do_POST = do_patch, do_get, do_post  # type: ignore[attr-defined]
        self.events: list[dict[str, Any]] = []

    def saved(self) -> dict[str, Any]:
        """The state the controller saved in the InferenceService."""
        return dict(json.loads(self.isvc["metadata"]["annotations"].get("mlspec.dev/rollout-state") or "{}"))


def test_the_namespace_controller_resumes_a_canary_after_a_restart_and_judges_a_revision_once(
    fleet: Fleet, tmp_path: Path
) -> None:
    rollout = {"strategy": "canary", "steps": [20, 50, 100],
               "analysis": {"max_error_rate": 0.01, "max_p99_ms": 5000, "min_requests": 30, "interval": "3s"}}  # fmt: skip
    kserve = FakeNamespace({
        "metadata": {"name": DEPLOYMENT, "annotations": {"mlspec.dev/rollout": json.dumps(rollout),
                                                          "mlspec.dev/model-version": GOOD}},
        "spec": {"predictor": {"canaryTrafficPercent": 20}},  # as rendered: a new pin starts at the first step
        "status": {"components": {"predictor": {"latestRolledoutRevision": "fraud-api-predictor-00001",
                                                "latestReadyRevision": "fraud-api-predictor-00002",
                                                "latestCreatedRevision": "fraud-api-predictor-00002"}}},
    })  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "mlspec.serving.rollout_watch",
        "--prometheus",
        fleet.prometheus.url,
        "--kube-api",
        kserve.url,
        "--namespace",
        "ml-prod",
        "--match",
        f"suite={fleet.suite}",
        "--poll",
        "0.25",
    ]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    percent = lambda: int(kserve.isvc["spec"]["predictor"].get("canaryTrafficPercent", 100))  # noqa: E731
    try:
        with KServeRouter(fleet, GOOD, percent):
            first = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
            wait_for(lambda: kserve.saved().get("state", {}).get("step") == 1, "the canary reached its second step", 40)
            first.terminate()  # a rolled node, an evicted pod: the step it was in is in the InferenceService
            assert first.wait(timeout=20) == 0
            held = kserve.saved()
            second_log = open(tmp_path / "second.log", "w+")  # noqa: SIM115
            second = subprocess.Popen(command, stderr=second_log, env=env)
            wait_for(lambda: kserve.saved().get("phase") == "promoted", "the resumed controller promoted it", 40)
            patches = len(kserve.patches)
            time.sleep(1.5)  # six more polls: a decided revision is never judged again
            second.terminate()
            second.wait(timeout=20)
            second_log.close()
            log = (tmp_path / "second.log").read_text()
    finally:
        kserve.server.shutdown()
        kserve.server.server_close()
    percents = [p["spec"]["predictor"]["canaryTrafficPercent"] for p in kserve.patches if "spec" in p]
    assert percents == [20, 50, 100, None], "resumed at step two: the first step is never given again"
    assert held["revision"] == "fraud-api-predictor-00002" and held["version"] == GOOD
    assert "canary started" not in log and f"promote {DEPLOYMENT} v{GOOD}" in log, log
    assert len(kserve.patches) == patches
    assert kserve.isvc["metadata"]["annotations"]["mlspec.dev/rollout-phase"] == "promoted"
    # each move is an Event on the InferenceService, valid for the API server, saying why
    assert [(e["reason"], e["type"]) for e in kserve.events] == [
        ("CanaryAdvanced", "Normal"), ("CanaryAdvanced", "Normal"), ("CanaryPromoted", "Normal")]  # fmt: skip
    for event in kserve.events:
        assert validate_core(event) == [], event
        assert event["regarding"]["name"] == DEPLOYMENT and event["note"].startswith(f"{DEPLOYMENT} v{GOOD} (")
    assert "held at 100% for 3s" in kserve.events[-1]["note"]
    # and each is kept on the InferenceService, across the restart, for `mlspec monitor` to copy into the audit log
    decisions = json.loads(kserve.isvc["metadata"]["annotations"]["mlspec.dev/rollout-decisions"])
    assert [(d["action"], d["percent"], d["version"]) for d in decisions] == [
        ("advance", 50, GOOD), ("advance", 100, GOOD), ("promote", 100, GOOD)]  # fmt: skip
    assert decisions[-1]["reason"] in kserve.events[-1]["note"] and decisions[0]["at"] < decisions[-1]["at"]


def test_a_rolled_back_canary_points_the_alias_back_and_rejects_the_version_in_a_real_registry(
    fleet: Fleet, mlflow_server: str
) -> None:
    """On a cluster the register step promoted v3 to @champion and the hand-off pinned it; its canary fails, and
    after the rollback the registry says so, as on the laptop: @champion is back at the version the rolled-out
    revision serves, v3 is tagged rolled back (so the next hand-off pins v1 again)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    client.create_registered_model("fraud-detector")
    for _ in range(3):
        run = client.create_run("0").info.run_id
        client.create_model_version("fraud-detector", f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("fraud-detector", "champion", FAILING)
    rollout = {"strategy": "canary", "steps": [20, 50, 100], "analysis": {"max_error_rate": 0.01, "min_requests": 20}}
    kserve = FakeNamespace({
        "metadata": {"name": DEPLOYMENT, "annotations": {
            "mlspec.dev/rollout": json.dumps(rollout), "mlspec.dev/model-version": FAILING,
            "mlspec.dev/model-name": "fraud-detector", "mlspec.dev/model-alias": "champion"}},
        "spec": {"predictor": {"canaryTrafficPercent": 20}},
        "status": {"components": {"predictor": {"latestRolledoutRevision": "fraud-api-predictor-00001",
                                                "latestReadyRevision": "fraud-api-predictor-00002",
                                                "latestCreatedRevision": "fraud-api-predictor-00002"}}},
    }, revisions={"fraud-api-predictor-00001": {"mlspec.dev/model-version": STABLE}})  # fmt: skip
    command = [sys.executable, "-m", "mlspec.serving.rollout_watch", "--prometheus", fleet.prometheus.url,
               "--kube-api", kserve.url, "--namespace", "ml-prod", "--match", f"suite={fleet.suite}", "--poll", "0.25",
               "--registry", mlflow_server]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    percent = lambda: int(kserve.isvc["spec"]["predictor"].get("canaryTrafficPercent", 100))  # noqa: E731
    try:
        with KServeRouter(fleet, FAILING, percent):
            controller = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
            wait_for(lambda: any(e["reason"] == "RegistryRestored" for e in kserve.events), "the registry restored", 40)
            controller.terminate()
            controller.wait(timeout=20)
    finally:
        kserve.server.shutdown()
        kserve.server.server_close()
    assert kserve.saved()["phase"] == "rolled_back" and percent() == 0
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == STABLE
    assert client.get_model_version("fraud-detector", FAILING).tags["mlspec.rollout"] == "rolled_back"
    restored = next(e for e in kserve.events if e["reason"] == "RegistryRestored")
    assert (
        restored["note"]
        == f"fraud-detector v{FAILING} tagged mlspec.rollout=rolled_back; fraud-detector@champion back at v{STABLE}"
    )
    assert [e["reason"] for e in kserve.events] == ["CanaryRolledBack", "RegistryRestored"]
    (decision,) = json.loads(kserve.isvc["metadata"]["annotations"]["mlspec.dev/rollout-decisions"])
    assert decision["action"] == "roll_back" and decision["percent"] == 0 and decision["version"] == FAILING
