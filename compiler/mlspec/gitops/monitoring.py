"""The reconciler's monitoring schedule: drift monitoring of a local-tier environment's served traffic.

It runs at the shortest ``monitoring.drift.schedule`` of the environment's Deployments,
only where the environment runs mlspec's own engines, and shortens the wait before the
next cycle so that a due run is not late.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlspec.gitops import usecases
from mlspec.gitops.events import Event, describe

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.gitops.status import Status
    from mlspec.resolve.graph import ResolvedGraph


def monitoring_interval(graph: ResolvedGraph) -> float | None:
    """The shortest ``monitoring.drift.schedule`` of the environment's Deployments, in seconds (None: none)."""
    from mlspec.spec.base import duration_seconds
    from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec

    schedules: list[float] = []
    for spec in graph.specs(Deployment):
        online = spec.model.spec
        drift = online.monitoring.drift if isinstance(online, OnlineDeploymentSpec) else None
        if drift is not None:
            schedules.append(float(duration_seconds(drift.schedule)))
    return min(schedules) if schedules else None


class MonitoringSchedule:
    """When monitoring is due, running it, and how long the loop may sleep before it is due again."""

    def __init__(
        self,
        environment: str,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.environment = environment
        self.enabled = enabled
        self.clock = clock
        self.progress = progress

    def every(self, graph: ResolvedGraph | None) -> float | None:
        """Seconds between runs for the environment as ``graph`` has it (None: it is not monitored here)."""
        if not self.enabled or graph is None or not usecases.runs_engines(graph):
            return None
        return monitoring_interval(graph)

    def run_if_due(
        self,
        status: Status,
        graph: Callable[[], ResolvedGraph | None],
        project: Callable[[], Project],
        events: list[Event],
    ) -> None:
        """Run monitoring when its interval has passed since the last run; report each Deployment's verdict.

        ``graph`` gives the environment at the applied commit, ``project`` the project there.
        """
        if not self.enabled:
            return
        every = self.every(graph())
        now = self.clock()
        if every is None or (status.last_monitoring is not None and now - status.last_monitoring < every):
            return
        commit = status.applied or ""
        status.last_monitoring = now
        try:
            outcomes = project().monitor(self.environment, progress=self.progress)
        except Exception as exc:
            events.append(Event("monitoring-failed", f"monitoring failed: {describe(exc)}", commit))
            return
        for outcome in outcomes:
            ref = f"Deployment/{outcome.deployment}"
            verdict = f"drift detected, {outcome.action}" if outcome.drifted else "no drift"
            events.append(Event("monitoring", f"monitoring {ref}: {verdict}: {outcome.message}", commit, (ref,)))

    def next_delay(self, status: Status, graph: Callable[[], ResolvedGraph | None], delay: float) -> float:
        """``delay``, shortened so that the next cycle starts when monitoring is next due."""
        if not self.enabled or status.last_monitoring is None:
            return delay
        every = self.every(graph())
        if every is None:
            return delay
        return max(0.0, min(delay, status.last_monitoring + every - self.clock()))
