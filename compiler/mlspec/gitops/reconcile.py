"""The pull-based GitOps reconciler: keep one environment equal to what a branch says.

Each cycle fetches the branch into a clone kept under a work folder. A commit that
is new (neither the last one applied nor one already refused) is checked and
applied: its signature first where the environment requires signed commits, then
validation, policies and the plan (``apply_environment``). A commit that fails any
of these is refused once, with its reasons in the audit log, and the environment
stays on the last good commit until a newer commit arrives. Between new commits
the reconciler looks for drift (``plan_environment(refresh=True)``) and repairs it
or only reports it, per the environment's ``reconcile.self_heal``. On a local-tier
environment it also runs drift monitoring at the Deployments' shortest
``monitoring.drift.schedule``. Target errors and failed applies are retried with a
capped exponential backoff; refusals are not retried.

What is recorded where:

* state: every resource carries the commit it was applied from (``revision``);
* audit log (the project's state database, in the clone): the applies themselves,
  and one ``{"type": "reconcile", ...}`` record per event (applied, refused, failed,
  drift, self-healed); the last ``applied`` record is the durable "last commit
  applied", the last ``refused`` one the commit that is not retried;
* ``<workdir>/status.json``: a small summary for people and probes (last applied,
  branch tip, refused commit and why, failures, drift, last monitoring run).

The parts, one job each: ``source`` (fetch, check out and verify a commit), ``cycle``
(one pass), ``repair`` (drift), ``monitoring`` (its schedule), ``loop`` (cycles with
backoff), ``status`` (``status.json``), ``journal`` (the audit log), ``lock`` (one
reconciler per work folder) and ``usecases`` (the only calls into the plan/apply
workflow). :class:`Reconciler` composes them.

The clone is the project: its own ``mlspec.yaml`` says where the state lives, so
``mlspec state list -C <workdir>/repo`` and ``mlspec audit log -C <workdir>/repo``
show what the reconciler did.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from mlspec.git.runner import GitError
from mlspec.gitops.context import CycleContext
from mlspec.gitops.cycle import Cycle
from mlspec.gitops.events import CycleResult, Event, EventKind, describe
from mlspec.gitops.journal import Journal
from mlspec.gitops.lock import WorkdirLock
from mlspec.gitops.loop import StopFlag, Stopper, backoff, run_loop
from mlspec.gitops.monitoring import MonitoringSchedule, monitoring_interval
from mlspec.gitops.source import CommitSource
from mlspec.gitops.status import STATUS, Status, StatusFile

__all__ = [
    "STATUS", "CycleResult", "Event", "EventKind", "GitError", "Reconciler", "Status", "StopFlag", "Stopper",
    "backoff", "default_actor", "monitoring_interval",
]  # fmt: skip

CLONE = "repo"


def default_actor() -> str:
    """Who the reconciler applies as: MLSPEC_ACTOR, else ``mlspec-reconcile@<host>``."""
    return os.environ.get("MLSPEC_ACTOR") or f"mlspec-reconcile@{socket.gethostname()}"


class Reconciler:
    """Keeps ``environment`` equal to ``branch`` of ``repo``. ``cycle()`` does one pass; ``run()`` loops.

    ``interval`` overrides the environment's ``reconcile.interval``. ``backoff_base``
    and ``backoff_cap`` shape the retry delays after failures. ``progress`` receives
    the per-resource lines of applies (events are returned, and passed to ``run``'s
    ``on_event``).
    """

    def __init__(
        self,
        environment: str,
        repo: str,
        branch: str,
        workdir: Path,
        *,
        interval: float | None = None,
        actor: str | None = None,
        gnupg_home: Path | None = None,
        allow_destroy: bool = False,
        monitoring: bool = True,
        backoff_base: float = 2.0,
        backoff_cap: float = 300.0,
        progress: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.environment = environment
        self.branch = branch
        self.workdir = workdir
        self.clone = workdir / CLONE
        self.actor = actor or default_actor()
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.source = CommitSource(repo, branch, self.clone, environment, gnupg_home=gnupg_home)
        self.repo = self.source.repo
        self.context = CycleContext(
            self.source,
            Journal(environment, self.repo, branch, self.actor),
            StatusFile(workdir, environment, self.repo, branch),
            allow_destroy=allow_destroy,
            progress=progress,
        )
        schedule = MonitoringSchedule(environment, enabled=monitoring, clock=clock, progress=progress)
        self._cycle = Cycle(
            self.context, schedule, interval=interval, backoff_base=backoff_base, backoff_cap=backoff_cap
        )
        self._lock = WorkdirLock(workdir)

    def run(self, stop: Stopper, on_event: Callable[[Event], None] = lambda _: None) -> None:
        """Cycle until ``stop`` is set; a stop request is honoured between steps, never in an apply."""
        with self._lock.held():
            run_loop(self.cycle, stop, on_event, self._crashed)

    def cycle(self, stop: Stopper | None = None) -> CycleResult:
        """Fetch; apply a new commit, or find (and repair) drift; run monitoring when due."""
        with self._lock.held():
            return self._cycle.run(stop.is_set if stop is not None else (lambda: False))

    def status(self) -> Status:
        """The reconciler's current view (from ``status.json``/audit the first time)."""
        return self.context.status

    def _crashed(self, exc: Exception) -> tuple[Event, float]:
        """A cycle that raised (state database, file system): counted as a failure, retried after a backoff."""
        status = self.context.status
        status.failures += 1
        status.last_error = f"cycle failed: {describe(exc)}"
        return Event("failed", status.last_error), backoff(status.failures, self.backoff_base, self.backoff_cap)
