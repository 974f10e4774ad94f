"""The reconciler's loop: run cycles until asked to stop, waiting between them, backing off after failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from mlspec.errors import UsageError
from mlspec.gitops.events import CycleResult, Event


class Stopper(Protocol):
    """What tells a running reconciler to stop (``threading.Event`` fits; so does :class:`StopFlag`)."""

    def is_set(self) -> bool:
        """True once stopping was asked for."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early when stopping is asked for; returns is_set()."""
        ...


class StopFlag:
    """A stop request that a signal handler may set safely (no locks: it only flips a flag)."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Ask the reconciler to stop after the current step."""
        self._set = True

    def is_set(self) -> bool:
        """True once stopping was asked for."""
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep in short steps until ``timeout`` passes or stopping is asked for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            left = 0.1 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.1, left))
        return self._set


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds before retry number ``failures`` (1, 2, ...): base, 2*base, 4*base, ... at most cap."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


def run_loop(
    cycle: Callable[[Stopper], CycleResult],
    stop: Stopper,
    on_event: Callable[[Event], None],
    on_crash: Callable[[Exception], tuple[Event, float]],
) -> None:
    """Cycle until ``stop`` is set, sleeping ``next_delay`` between cycles.

    A cycle that raises (state database, file system) is reported through ``on_crash``,
    which answers with the event to report and the backoff delay; a UsageError ends the loop.
    """
    while not stop.is_set():
        try:
            result = cycle(stop)
        except UsageError:
            raise
        except Exception as exc:  # report, back off, go on
            event, delay = on_crash(exc)
            on_event(event)
            stop.wait(delay)
            continue
        for event in result.events:
            on_event(event)
        stop.wait(result.next_delay)
