"""A canary's analysis: the thresholds it must hold and how long each step is watched (the spec's
``rollout.analysis``), shared by the laptop's router and the cluster's rollout controller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(text: str) -> float:
    """Seconds in a spec duration like '30s', '5m' or '2h'."""
    return float(text[:-1]) * UNITS[text[-1]]


@dataclass(frozen=True)
class Analysis:
    """The thresholds a challenger must hold (the spec's rollout.analysis)."""

    max_error_rate: float = 0.01
    max_p99_ms: float = 100.0
    min_requests: int = 100
    interval: str = "5m"

    @property
    def interval_seconds(self) -> float:
        """How long each step is watched before it may advance."""
        return duration_seconds(self.interval)

    @classmethod
    def from_rollout(cls, rollout: dict[str, Any]) -> Analysis:
        """The analysis block of a rollout, with the spec's defaults."""
        raw = rollout.get("analysis") or {}
        return cls(
            max_error_rate=float(raw.get("max_error_rate", 0.01)),
            max_p99_ms=float(raw.get("max_p99_ms", 100.0)),
            min_requests=max(1, int(raw.get("min_requests", 100))),
            interval=str(raw.get("interval", "5m")),
        )
