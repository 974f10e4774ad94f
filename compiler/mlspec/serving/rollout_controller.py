"""The canary controller of a cluster: judges a KServe canary from every replica's metrics through Prometheus.

On the laptop one server process sees all of a canary's traffic and judges it itself (``router.CanaryRouter``).
On KServe the canary revision runs several pods and KServe splits traffic by ``canaryTrafficPercent``: no pod
sees the whole canary. This controller asks Prometheus instead, summing ``mlspec_requests_total``,
``mlspec_request_errors_total`` and the ``mlspec_request_duration_seconds`` histogram over every pod that
serves the canary's version, and moves ``canaryTrafficPercent`` through the spec's steps with the laptop's
rules (:func:`judge`): a window holds at least ``min_requests`` canary requests; a window over the error-rate
or p99 threshold rolls back at once; a step advances only once its ``interval`` has passed and a window then
holds; after the last step the canary is promoted. Without numbers (Prometheus unreachable, refusing the
query) nothing moves and the reason says why.

:func:`judge` is pure; :class:`CanaryController` does the I/O (Prometheus, the :class:`Actuator`) and
:func:`run` polls it until the rollout is decided or SIGTERM arrives. ``python -m mlspec.serving.rollout_kserve``
runs it against an InferenceService.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Protocol

from mlspec.serving.analysis import Analysis
from mlspec.serving.prometheus import Prometheus, PrometheusError, selector

log = logging.getLogger("mlspec.rollout")
WAIT, ADVANCE, PROMOTE, ROLL_BACK = "wait", "advance", "promote", "roll_back"
PENDING, PROGRESSING, PROMOTED, ROLLED_BACK = "pending", "progressing", "promoted", "rolled_back"
# the laptop router's analysis, judged here from Prometheus: the same thresholds, defaults and interval
Thresholds = Analysis


@dataclass(frozen=True)
class CanaryState:
    """Where a canary stands: its step, when the step and the open window began (Unix seconds, Prometheus's
    clock), and what the step's judged windows held so far."""

    step: int = 0
    step_started: float = 0.0
    window_started: float = 0.0
    step_requests: float = 0.0
    step_errors: float = 0.0

    @classmethod
    def begin(cls, now: float, step: int = 0) -> CanaryState:
        """A step that starts now, with an empty window."""
        return cls(step=step, step_started=now, window_started=now)


@dataclass(frozen=True)
class Observation:
    """What Prometheus summed over every replica of the canary's version during the open window."""

    requests: float | None  # None: Prometheus holds no samples of the canary in the window yet
    errors: float
    p99_seconds: float | None  # None: no latency observed (histogram_quantile is NaN)


@dataclass(frozen=True)
class Unavailable:
    """No numbers this time, and why (Prometheus unreachable, a query refused)."""

    reason: str


@dataclass(frozen=True)
class Decision:
    """What the controller does now: ``action``, the canary's traffic after it, why, the state after it, and
    the numbers judged over which window (``since``, ``until``; None when there were none)."""

    action: str
    percent: int
    reason: str
    state: CanaryState
    observed: Observation | None = None
    window: tuple[float, float] | None = None


def _step_label(state: CanaryState, steps: Sequence[int]) -> str:
    return f"step {state.step + 1} of {len(steps)} at {steps[state.step]}%"


def judge(
    state: CanaryState, steps: Sequence[int], limits: Thresholds, observed: Observation | Unavailable, now: float
) -> Decision:
    """Wait, advance, promote or roll back, by the laptop router's rules, from the open window's numbers."""
    percent, where = steps[state.step], _step_label(state, steps)
    if isinstance(observed, Unavailable):
        return Decision(WAIT, percent, f"{where}: not judged, traffic unchanged: {observed.reason}", state)
    window = (state.window_started, now)
    n = observed.requests
    if n is None:  # a window shorter than two scrapes, or no canary pod scraped yet
        reason = f"{where}: no samples of the canary in this window yet; waiting for more"
        return Decision(WAIT, percent, reason, state, observed, window)
    if n < limits.min_requests:
        reason = f"{where}: {n:.0f} of {limits.min_requests} canary requests in this window; waiting for more"
        return Decision(WAIT, percent, reason, state, observed, window)
    rate = observed.errors / n
    if rate > limits.max_error_rate:
        reason = f"error rate {rate:.2f} > max {limits.max_error_rate:g} over {n:.0f} canary requests"
        return Decision(ROLL_BACK, 0, reason, state, observed, window)
    if observed.p99_seconds is None:
        reason = f"{where}: not judged, traffic unchanged: {n:.0f} canary requests but no latency histogram"
        return Decision(WAIT, percent, reason, state, observed, window)
    p99_ms = observed.p99_seconds * 1000.0
    if p99_ms > limits.max_p99_ms:
        reason = f"p99 {p99_ms:.1f} ms > max {limits.max_p99_ms:g} ms over {n:.0f} canary requests"
        return Decision(ROLL_BACK, 0, reason, state, observed, window)
    held = replace(
        state,
        window_started=now,
        step_requests=state.step_requests + n,
        step_errors=state.step_errors + observed.errors,
    )
    watched = now - state.step_started
    if watched < limits.interval_seconds:  # healthy so far; the step is watched for its whole interval
        reason = (
            f"{where}: {held.step_requests:.0f} canary requests held so far; judged again after {limits.interval} "
            f"({watched:.0f} s watched)"
        )
        return Decision(WAIT, percent, reason, held, observed, window)
    overall = held.step_errors / held.step_requests
    if state.step + 1 >= len(steps):
        reason = (
            f"error rate {overall:.2f}, p99 {p99_ms:.1f} ms held at {steps[-1]}% for {limits.interval} "
            f"({held.step_requests:.0f} canary requests)"
        )
        return Decision(PROMOTE, 100, reason, held, observed, window)
    following = steps[state.step + 1]
    reason = (
        f"step {state.step + 1} held for {limits.interval} ({held.step_requests:.0f} requests, error rate "
        f"{overall:.2f}, p99 {p99_ms:.1f} ms); now {following}%"
    )
    return Decision(ADVANCE, following, reason, CanaryState.begin(now, state.step + 1), observed, window)


@dataclass(frozen=True)
class CanaryQueries:
    """The PromQL that sums a canary version's metrics over every pod serving it (labels as the server exports
    them; ``scope`` adds matchers such as the namespace Prometheus's Kubernetes discovery attaches)."""

    deployment: str
    version: str
    scope: dict[str, str] = field(default_factory=dict)

    def matching(self, metric: str) -> str:
        """``metric`` selected for the canary version (and the scope)."""
        return selector(metric, deployment=self.deployment, version=self.version, **self.scope)

    def requests(self, seconds: int) -> str:
        """Canary requests answered in the last ``seconds``, every replica summed."""
        return f"sum(increase({self.matching('mlspec_requests_total')}[{seconds}s]))"

    def errors(self, seconds: int) -> str:
        """Canary requests that failed (5xx) in the last ``seconds``, every replica summed."""
        return f"sum(increase({self.matching('mlspec_request_errors_total')}[{seconds}s]))"

    def p99(self, seconds: int) -> str:
        """The canary's p99 latency (seconds) over the last ``seconds``, from every replica's histogram buckets."""
        buckets = self.matching("mlspec_request_duration_seconds_bucket")
        return f"histogram_quantile(0.99, sum by (le) (increase({buckets}[{seconds}s])))"


def observe(prometheus: Prometheus, queries: CanaryQueries, since: float, now: float) -> Observation:
    """The window ``since``..``now`` as Prometheus sums it over every replica; PrometheusError when it cannot."""
    seconds = max(1, math.ceil(now - since))
    requests = prometheus.value(queries.requests(seconds), at=now)
    errors = prometheus.value(queries.errors(seconds), at=now) or 0.0
    p99 = prometheus.value(queries.p99(seconds), at=now)
    return Observation(requests, errors, p99)


class ActuationError(RuntimeError):
    """The actuator could not change the canary's traffic (the decision is tried again on the next poll)."""


class Actuator(Protocol):
    """What moves a canary's traffic: KServe's ``canaryTrafficPercent`` on a cluster, a recorder in tests."""

    def set_canary_percent(self, percent: int) -> None:
        """Give the canary ``percent`` of the traffic."""

    def promote(self) -> None:
        """Make the canary the served version (all traffic)."""

    def roll_back(self, reason: str) -> None:
        """Give all traffic back to the previous version, saying why."""


class CanaryController:
    """Judges one canary version from Prometheus and moves its traffic through an :class:`Actuator`."""

    def __init__(
        self,
        prometheus: Prometheus,
        queries: CanaryQueries,
        rollout: dict[str, Any],
        actuator: Actuator,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A controller of the canary ``queries`` select, for the spec's ``rollout`` (steps and analysis)."""
        self.prometheus = prometheus
        self.queries = queries
        self.steps: list[int] = [int(s) for s in rollout["steps"]]
        self.limits = Thresholds.from_rollout(rollout)
        self.actuator = actuator
        self.clock = clock
        self.phase = PENDING
        self.state = CanaryState()
        self.last: Decision | None = None
        self.history: deque[Decision] = deque(maxlen=1000)  # the latest decisions, oldest first

    @property
    def finished(self) -> bool:
        """True once the canary was promoted or rolled back."""
        return self.phase in (PROMOTED, ROLLED_BACK)

    def start(self, resume: CanaryState | None = None) -> Decision:
        """Give the canary its step's traffic and open the step (``resume``: a state saved earlier)."""
        state = resume or CanaryState.begin(self.clock())
        percent = self.steps[state.step]
        try:
            self.actuator.set_canary_percent(percent)
        except ActuationError as exc:  # still pending: the next poll tries again
            return self._record(Decision(WAIT, 0, f"canary not started: {exc}", state), level=logging.ERROR)
        self.state, self.phase = state, PROGRESSING
        decision = Decision(WAIT, percent, f"canary started; {_step_label(state, self.steps)}", state)
        return self._record(decision)

    def once(self) -> Decision:
        """One poll: ask Prometheus about the open window, judge, act; returns what was decided."""
        if self.phase == PENDING:
            return self.start()
        if self.finished and self.last is not None:
            return self.last
        now = self.clock()
        observed: Observation | Unavailable
        try:
            observed = observe(self.prometheus, self.queries, self.state.window_started, now)
        except PrometheusError as exc:
            observed = Unavailable(str(exc))
        decision = judge(self.state, self.steps, self.limits, observed, now)
        try:
            if decision.action == ADVANCE:
                self.actuator.set_canary_percent(decision.percent)
            elif decision.action == PROMOTE:
                self.actuator.promote()
            elif decision.action == ROLL_BACK:
                self.actuator.roll_back(decision.reason)
        except ActuationError as exc:  # nothing moved: keep the state, judge again on the next poll
            failed = replace(
                decision, action=WAIT, percent=self.steps[self.state.step], state=self.state,
                reason=f"{decision.action} not applied ({decision.reason}): {exc}",
            )  # fmt: skip
            return self._record(failed, level=logging.ERROR)
        self.state = decision.state
        self.phase = {PROMOTE: PROMOTED, ROLL_BACK: ROLLED_BACK}.get(decision.action, PROGRESSING)
        return self._record(decision)

    def _record(self, decision: Decision, level: int = logging.INFO) -> Decision:
        self.last = decision
        self.history.append(decision)
        log.log(
            level,
            "%s %s v%s: %s -> canary %d%%: %s",
            decision.action,
            self.queries.deployment,
            self.queries.version,
            self.phase,
            decision.percent,
            decision.reason,
        )
        return decision


@contextlib.contextmanager
def stop_on_sigterm(stop: threading.Event, message: str) -> Iterator[threading.Event]:
    """Set ``stop`` (logging ``message``) when SIGTERM arrives while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        """Stop polling."""
        log.info("SIGTERM: stopping; %s", message)
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(controller: CanaryController, poll: float, stop: threading.Event | None = None) -> Decision:
    """Poll every ``poll`` seconds until the canary is promoted or rolled back, ``stop`` is set or SIGTERM
    arrives (traffic then stays where it is); returns the last decision."""
    with stop_on_sigterm(stop or threading.Event(), "the canary's traffic stays where it is") as stopping:
        decision = controller.once()
        while not controller.finished and not stopping.wait(poll):
            decision = controller.once()
        return decision
