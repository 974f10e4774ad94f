"""Prometheus metrics (text exposition format 0.0.4), kept as plain counters so the hot path stays cheap."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)


class Histogram:
    """A Prometheus histogram with fixed upper bounds (per-bucket counts, made cumulative when rendered)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        """An empty histogram over ``bounds`` (ascending, +Inf implied)."""
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> Iterable[str]:
        """Exposition lines for this histogram under ``name`` with the label set ``labels``."""
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            yield f'{name}_bucket{{{labels},le="{bound:g}"}} {running}'
        yield f'{name}_bucket{{{labels},le="+Inf"}} {self.count}'
        yield f"{name}_sum{{{labels}}} {self.total:.9g}"
        yield f"{name}_count{{{labels}}} {self.count}"


@dataclass
class VariantStats:
    """Counters of one variant (by name and version); they survive reloads that keep the same version."""

    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    batch: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))


@dataclass
class ShadowStats:
    """How a shadow challenger's outputs compare with the stable answers."""

    requests: int = 0
    rows: int = 0
    values: int = 0
    abs_diff_sum: float = 0.0
    same_decision_rows: int = 0
    errors: int = 0

    @property
    def mean_abs_diff(self) -> float:
        """Mean absolute difference over all compared output values."""
        return self.abs_diff_sum / self.values if self.values else 0.0

    @property
    def agreement(self) -> float:
        """Share of compared rows with the same decision at threshold 0.5."""
        return self.same_decision_rows / self.rows if self.rows else 0.0


def escape(value: str) -> str:
    """A label value escaped for the exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**pairs: str) -> str:
    """A label set, e.g. ``deployment="a",variant="stable"``."""
    return ",".join(f'{key}="{escape(value)}"' for key, value in pairs.items())


@dataclass
class MetricFamily:
    """One metric: help, type and its sample lines."""

    name: str
    kind: str
    help: str
    samples: list[str] = field(default_factory=list)


def render(families: Iterable[MetricFamily]) -> bytes:
    """The exposition text of ``families`` (families without samples are left out)."""
    out: list[str] = []
    for family in families:
        if not family.samples:
            continue
        out.append(f"# HELP {family.name} {family.help}")
        out.append(f"# TYPE {family.name} {family.kind}")
        out.extend(family.samples)
    return ("\n".join(out) + "\n").encode()
