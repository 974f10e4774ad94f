"""Traffic strategies (direct, canary, ab, shadow, blue_green) and the canary controller that judges a challenger."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from mlspec.serving.analysis import Analysis
from mlspec.serving.config import STABLE, ServingConfig
from mlspec.serving.metrics import VariantStats
from mlspec.serving.models import LoadedModel

LOADING, LOADED, REJECTED = "loading", "loaded", "rejected"


@dataclass(eq=False)
class Arm:
    """One variant as traffic sees it: its model once loaded, its state and its counters."""

    name: str
    alias: str
    version: str
    stats: VariantStats
    model: LoadedModel | None = None
    state: str = LOADING
    reason: str = ""
    prefix: str = ""  # pre-encoded start of its infer responses


def sticky_point(key: str) -> float:
    """A stable point in [0, 1) for ``key``: the same key always lands on the same point."""
    return int.from_bytes(blake2b(key.encode(), digest_size=8).digest(), "big") / 2.0**64


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Router:
    """Direct strategy, and the base of the others: every request goes to 'stable'."""

    strategy = "direct"

    def __init__(self, arms: dict[str, Arm], rollout: dict[str, Any]) -> None:
        """A router over ``arms`` (by name) for the spec's ``rollout``."""
        self.arms = arms
        self.rollout = rollout
        self.analysis = Analysis.from_rollout(rollout)
        self.phase = "serving"
        self.reason = ""
        self.stable = arms.get(STABLE)
        self.challenger = next((a for name, a in arms.items() if name != STABLE), None)

    def choose(self, sticky: str | None) -> Arm | None:
        """The arm that answers this request (None when no arm can)."""
        return self.stable if self.stable is not None and self.stable.model is not None else None

    def record(self, arm: Arm, latency: float, error: bool) -> bool:
        """Account one answered request; True when the rollout's phase or weights changed."""
        return False

    def mirror(self) -> Arm | None:
        """The arm a request is mirrored to after it is answered (shadow only)."""
        return None

    def on_state(self, arm: Arm) -> bool:
        """An arm finished loading (or was rejected); True when the phase changed."""
        return False

    def weights(self) -> dict[str, float]:
        """Current traffic share of each arm, in percent."""
        return {name: (100.0 if arm is self.stable else 0.0) for name, arm in self.arms.items()}

    def details(self) -> dict[str, Any]:
        """Strategy-specific fields of the rollout status."""
        return {}


class CanaryRouter(Router):
    """Stepwise traffic to the canary, judged on the traffic the rollout itself routed.

    Every ``min_requests`` canary requests form a window that is judged at once: a window over the error-rate or
    p99 threshold rolls back immediately. A step advances only when its ``interval`` has passed *and* a window
    then holds the thresholds: no load, however heavy, moves a step before its interval, and a quiet step waits
    for enough requests however long it has run.
    """

    strategy = "canary"
    clock = staticmethod(time.monotonic)

    def __init__(self, arms: dict[str, Arm], rollout: dict[str, Any]) -> None:
        """A canary router; with no second variant everything goes to 'stable'."""
        super().__init__(arms, rollout)
        self.steps: list[int] = list(rollout["steps"])
        self.step = 0
        self.weight = 0.0
        self.window: list[float] = []
        self.window_errors = 0
        self.step_started = 0.0
        self.step_requests = 0
        self.step_errors = 0
        self.phase = "serving" if self.challenger is None else "pending"

    def choose(self, sticky: str | None) -> Arm | None:
        """The canary with the current step's probability, else stable."""
        weight = self.weight
        if weight and (weight >= 100.0 or random.random() * 100.0 < weight):
            return self.challenger
        return super().choose(sticky)

    def on_state(self, arm: Arm) -> bool:
        """Start the first step once the canary is loaded; roll back when it was rejected."""
        if arm is not self.challenger or self.phase != "pending":
            return False
        if arm.state == LOADED:
            self.phase, self.weight = "progressing", float(self.steps[0])
            self._start_step()
            self.reason = f"canary loaded; step 1 of {len(self.steps)} at {self.steps[0]}%"
        else:
            self.phase, self.weight, self.reason = "rolled_back", 0.0, f"canary rejected: {arm.reason}"
        return True

    def _start_step(self) -> None:
        self.step_started = self.clock()
        self.step_requests = self.step_errors = 0

    def record(self, arm: Arm, latency: float, error: bool) -> bool:
        """Count a canary request the rollout routed; judge each window of ``min_requests``."""
        if arm is not self.challenger or self.phase != "progressing":
            return False
        self.window.append(latency)
        if error:
            self.window_errors += 1
        if len(self.window) < self.analysis.min_requests:
            return False
        return self._judge()

    def _judge(self) -> bool:
        analysis = self.analysis
        n = len(self.window)
        rate = self.window_errors / n
        p99_ms = p99(self.window) * 1000.0
        self.step_requests += n
        self.step_errors += self.window_errors
        self.window, self.window_errors = [], 0
        if rate > analysis.max_error_rate:
            self.phase, self.weight = "rolled_back", 0.0
            self.reason = f"error rate {rate:.2f} > max {analysis.max_error_rate:g} over {n} canary requests"
            return True
        if p99_ms > analysis.max_p99_ms:
            self.phase, self.weight = "rolled_back", 0.0
            self.reason = f"p99 {p99_ms:.1f} ms > max {analysis.max_p99_ms:g} ms over {n} canary requests"
            return True
        watched = self.clock() - self.step_started
        if watched < analysis.interval_seconds:  # healthy so far; the step is watched for its whole interval
            self.reason = (
                f"step {self.step + 1} of {len(self.steps)} at {self.steps[self.step]}%: {self.step_requests} canary "
                f"requests held so far; judged again after {analysis.interval} ({watched:.0f} s watched)"
            )
            return False
        overall = self.step_errors / self.step_requests
        if self.step + 1 >= len(self.steps):
            self.phase, self.weight = "promoted", float(self.steps[-1])
            self.reason = (
                f"error rate {overall:.2f}, p99 {p99_ms:.1f} ms held at {self.steps[-1]}% for {analysis.interval} "
                f"({self.step_requests} canary requests)"
            )
            if self.steps[-1] < 100:
                self.reason += " (last step below 100%)"
        else:
            self.step += 1
            self.weight = float(self.steps[self.step])
            self.reason = (
                f"step {self.step} held for {analysis.interval} ({self.step_requests} requests, error rate "
                f"{overall:.2f}, p99 {p99_ms:.1f} ms); now {self.steps[self.step]}%"
            )
            self._start_step()
        return True

    def weights(self) -> dict[str, float]:
        """Canary share = the current step (0 before loading or after a rollback)."""
        shares = dict.fromkeys(self.arms, 0.0)
        if self.stable is not None:
            shares[STABLE] = 100.0 - self.weight
        if self.challenger is not None:
            shares[self.challenger.name] = self.weight
        return shares

    def details(self) -> dict[str, Any]:
        """Steps, the current step, the open analysis window and how long the step has been watched."""
        watched = self.clock() - self.step_started if self.phase == "progressing" else 0.0
        return {
            "steps": self.steps,
            "step": self.step,
            "window": {"requests": len(self.window), "errors": self.window_errors},
            "step_requests": self.step_requests,
            "step_seconds": round(watched, 1),
            "analysis": {**vars(self.analysis), "interval_seconds": self.analysis.interval_seconds},
        }


class AbRouter(Router):
    """Weighted split between aliases; sticky by a request key when one is given."""

    strategy = "ab"

    def __init__(self, arms: dict[str, Arm], rollout: dict[str, Any]) -> None:
        """An A/B router with the spec's weights (arms are named by alias)."""
        super().__init__(arms, rollout)
        self.spec_weights = {str(v["alias"]): float(v["weight"]) for v in rollout["variants"]}
        self.sticky_key: str | None = rollout.get("sticky_key")
        self.phase = "pending"
        self.edges: list[tuple[float, Arm]] = []
        self.total = 0.0
        self._rebuild()

    def _rebuild(self) -> None:
        edges, total = [], 0.0
        for alias, weight in self.spec_weights.items():
            arm = self.arms.get(alias)
            if arm is not None and arm.model is not None and weight > 0:
                total += weight
                edges.append((total, arm))
        self.edges, self.total = edges, total

    def choose(self, sticky: str | None) -> Arm | None:
        """The arm for ``sticky`` (hashed; the same key always gets the same arm) or a random one."""
        if not self.edges:
            return None
        point = (sticky_point(sticky) if sticky is not None else random.random()) * self.total
        for edge, arm in self.edges:
            if point < edge:
                return arm
        return self.edges[-1][1]

    def on_state(self, arm: Arm) -> bool:
        """Recompute the split over the loaded arms."""
        self._rebuild()
        if any(a.state == LOADING for a in self.arms.values()):
            return False
        rejected = [a for a in self.arms.values() if a.state == REJECTED]
        self.phase = "running" if self.edges else "failed"
        self.reason = "; ".join(f"{a.name} rejected: {a.reason}" for a in rejected)
        return True

    def weights(self) -> dict[str, float]:
        """The spec's weights renormalised over the loaded arms."""
        shares = dict.fromkeys(self.arms, 0.0)
        previous = 0.0
        for edge, arm in self.edges:
            shares[arm.name] = 100.0 * (edge - previous) / self.total
            previous = edge
        return shares

    def details(self) -> dict[str, Any]:
        """The sticky key and the spec's weights."""
        return {"sticky_key": self.sticky_key, "spec_weights": self.spec_weights}


class ShadowRouter(Router):
    """Answer from stable; mirror a sample of requests to the challenger and compare."""

    strategy = "shadow"

    def __init__(self, arms: dict[str, Arm], rollout: dict[str, Any]) -> None:
        """A shadow router mirroring ``sample`` percent of requests."""
        super().__init__(arms, rollout)
        self.sample = float(rollout.get("sample", 100))
        self.phase = "serving" if self.challenger is None else "pending"

    def mirror(self) -> Arm | None:
        """The challenger for ``sample`` percent of requests once it is loaded."""
        if self.phase == "shadowing" and (self.sample >= 100.0 or random.random() * 100.0 < self.sample):
            return self.challenger
        return None

    def on_state(self, arm: Arm) -> bool:
        """Start mirroring once the challenger is loaded."""
        if arm is not self.challenger or self.phase != "pending":
            return False
        if arm.state == LOADED:
            self.phase, self.reason = "shadowing", f"mirroring {self.sample:g}% of requests to {arm.name}"
        else:
            self.phase, self.reason = "rolled_back", f"challenger rejected: {arm.reason}"
        return True

    def details(self) -> dict[str, Any]:
        """The mirrored share."""
        return {"sample": self.sample}


class BlueGreenRouter(Router):
    """Blue (stable) serves until green is loaded and passed a smoke inference; then all traffic switches."""

    strategy = "blue_green"

    def __init__(self, arms: dict[str, Arm], rollout: dict[str, Any]) -> None:
        """A blue/green router; green is the second variant."""
        super().__init__(arms, rollout)
        self.switched = False
        self.phase = "serving" if self.challenger is None else "pending"

    def choose(self, sticky: str | None) -> Arm | None:
        """Green once switched, else blue."""
        if self.switched:
            return self.challenger
        return super().choose(sticky)

    def on_state(self, arm: Arm) -> bool:
        """Switch when green is loaded (the loader ran its smoke inference); stay on blue when it was rejected."""
        if arm is not self.challenger or self.phase != "pending":
            return False
        if arm.state == LOADED:
            self.switched = True
            self.phase, self.reason = "switched", f"{arm.name} loaded and passed a smoke inference; all traffic moved"
        else:
            self.phase, self.reason = "rolled_back", f"green rejected: {arm.reason}"
        return True

    def weights(self) -> dict[str, float]:
        """All on one colour."""
        shares = dict.fromkeys(self.arms, 0.0)
        target = self.challenger if self.switched else self.stable
        if target is not None:
            shares[target.name] = 100.0
        return shares


ROUTERS: dict[str, type[Router]] = {
    "direct": Router,
    "canary": CanaryRouter,
    "ab": AbRouter,
    "shadow": ShadowRouter,
    "blue_green": BlueGreenRouter,
}


def make_router(config: ServingConfig, arms: dict[str, Arm]) -> Router:
    """The router for the config's rollout strategy."""
    return ROUTERS[config.strategy](arms, config.rollout)
