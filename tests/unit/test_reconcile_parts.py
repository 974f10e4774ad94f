"""The reconciler's parts on their own: the monitoring schedule, the loop's backoff, the status file, the lock."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlspec.app.project import Project
from mlspec.errors import UsageError
from mlspec.gitops import usecases
from mlspec.gitops.events import CycleResult, Event
from mlspec.gitops.lock import WorkdirLock
from mlspec.gitops.loop import StopFlag, Stopper, backoff, run_loop
from mlspec.gitops.monitoring import MonitoringSchedule
from mlspec.gitops.status import Status, StatusFile
from mlspec.resolve.graph import ResolvedGraph
from tests.integration.test_lifecycle import edit, make_project


@pytest.fixture
def platform(tmp_path: Path) -> Project:
    """prod with one Deployment monitored every 15 minutes."""
    root = make_project(tmp_path / "repo")
    edit(
        root,
        "specs/all.yaml",
        "rollout: {strategy: canary",
        "monitoring: {drift: {schedule: 15m}}\n  rollout: {strategy: canary",
    )
    return Project.open(root)


@pytest.fixture
def monitored(platform: Project) -> ResolvedGraph:
    graph = platform.resolve("prod").graph
    assert graph is not None
    return graph


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_monitoring_runs_when_due_and_the_next_cycle_waits_no_longer_than_the_schedule(
    platform: Project, monitored: ResolvedGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []

    def monitor(project: Any, environment: str, *, progress: Any) -> list[Any]:
        runs.append(environment)
        return [SimpleNamespace(deployment="fraud-api", drifted=False, action="none", message="psi 0.01")]

    monkeypatch.setattr(usecases, "runs_engines", lambda graph: True)
    monkeypatch.setattr(Project, "monitor", monitor)
    clock = Clock(1000.0)
    schedule = MonitoringSchedule("prod", clock=clock)
    status = Status("prod", "repo", "main", applied="c1")
    events: list[Event] = []
    schedule.run_if_due(status, lambda: monitored, lambda: platform, events)
    assert runs == ["prod"] and status.last_monitoring == 1000.0
    assert [e.message for e in events] == ["monitoring Deployment/fraud-api: no drift: psi 0.01"]
    clock.now = 1000.0 + 600
    schedule.run_if_due(status, lambda: monitored, lambda: platform, events)
    assert runs == ["prod"], "not due before 15 minutes"
    assert schedule.next_delay(status, lambda: monitored, 3600.0) == 300.0, "woken when monitoring is due"
    assert schedule.next_delay(status, lambda: monitored, 60.0) == 60.0
    clock.now = 1000.0 + 900
    schedule.run_if_due(status, lambda: monitored, lambda: platform, events)
    assert runs == ["prod", "prod"]


def test_monitoring_is_skipped_when_off_or_not_on_local_engines(
    monitored: ResolvedGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Project, "monitor", lambda *_, **__: pytest.fail("monitoring must not run"))
    status = Status("prod", "repo", "main", applied="c1", last_monitoring=0.0)
    monkeypatch.setattr(usecases, "runs_engines", lambda graph: True)
    off = MonitoringSchedule("prod", enabled=False, clock=Clock(10_000.0))
    off.run_if_due(status, lambda: monitored, lambda: pytest.fail("no project needed"), [])
    assert off.next_delay(status, lambda: monitored, 60.0) == 60.0
    monkeypatch.setattr(usecases, "runs_engines", lambda graph: False)
    elsewhere = MonitoringSchedule("prod", clock=Clock(10_000.0))
    elsewhere.run_if_due(status, lambda: monitored, lambda: pytest.fail("no project needed"), [])
    assert elsewhere.every(monitored) is None


def test_a_failed_monitoring_run_is_an_event_not_a_crash(
    platform: Project, monitored: ResolvedGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> list[Any]:
        raise RuntimeError("evidently exploded")

    monkeypatch.setattr(usecases, "runs_engines", lambda graph: True)
    monkeypatch.setattr(Project, "monitor", broken)
    events: list[Event] = []
    status = Status("prod", "repo", "main", applied="c1")
    MonitoringSchedule("prod", clock=Clock(5.0)).run_if_due(status, lambda: monitored, lambda: platform, events)
    assert [(e.kind, e.message) for e in events] == [
        ("monitoring-failed", "monitoring failed: RuntimeError: evidently exploded")
    ]


def test_the_loop_backs_off_after_a_crashed_cycle_and_stops_when_asked() -> None:
    waits: list[float | None] = []
    seen: list[str] = []

    class Recording(StopFlag):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return self.is_set()

    stop = Recording()
    calls = 0

    def cycle(_: Stopper) -> CycleResult:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OSError("disk full")
        stop.set()
        return CycleResult("prod", "c1", "c1", (Event("applied", "commit c1: applied"),), None, False, (), 60.0)

    def crashed(exc: Exception) -> tuple[Event, float]:
        return Event("failed", f"cycle failed: {exc}"), backoff(calls, 2.0, 3.0)

    run_loop(cycle, stop, lambda e: seen.append(e.message), crashed)
    assert seen == ["cycle failed: disk full", "cycle failed: disk full", "commit c1: applied"]
    assert waits == [2.0, 3.0, 60.0], "backoff, capped; then the cycle's own delay"

    def usage(_: Stopper) -> CycleResult:
        raise UsageError("another reconciler is running")

    with pytest.raises(UsageError):
        run_loop(usage, StopFlag(), lambda e: None, crashed)


def test_the_status_file_round_trips_and_ignores_another_environments(tmp_path: Path) -> None:
    file = StatusFile(tmp_path, "prod", "/repo", "main")
    assert file.read() == Status("prod", "/repo", "main"), "no file yet: a fresh status"
    status = Status("prod", "/repo", "main", applied="c1", failures=2, drift=["Deployment/x"], last_monitoring=5.0)
    file.write(status)
    assert file.read() == status
    assert StatusFile(tmp_path, "prod", "/repo", "release").read() == Status("prod", "/repo", "release")
    (tmp_path / "status.json").write_text("{not json")
    assert file.read() == Status("prod", "/repo", "main")


def test_one_reconciler_per_work_folder_and_the_holder_may_nest(tmp_path: Path) -> None:
    first, second = WorkdirLock(tmp_path / "work"), WorkdirLock(tmp_path / "work")
    with first.held():
        with first.held():
            pass
        with pytest.raises(UsageError, match="another reconciler is running"), second.held():
            pass
    with second.held():
        pass
