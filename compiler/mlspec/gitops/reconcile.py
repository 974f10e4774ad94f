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

The clone is the project: its own ``mlspec.yaml`` says where the state lives, so
``mlspec state list -C <workdir>/repo`` and ``mlspec audit log -C <workdir>/repo``
show what the reconciler did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlspec.errors import MlspecError, UsageError

if TYPE_CHECKING:
    from mlspec.project import Project
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.spec.environment import EnvironmentSpec

EventKind = Literal[
    "applied", "refused", "failed", "drift", "self-healed", "monitoring", "fetch-failed", "monitoring-failed"
]
CLONE = "repo"
STATUS = "status.json"


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


@dataclass(frozen=True)
class Event:
    """One thing that happened, as the one line printed and written to the audit log."""

    kind: EventKind
    message: str
    commit: str = ""
    resources: tuple[str, ...] = ()


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did and where it left the environment."""

    environment: str
    branch_commit: str | None  # the branch tip fetched (None when the fetch failed)
    applied_commit: str | None  # the commit the environment is at after the cycle
    events: tuple[Event, ...]
    refused: str | None  # the branch tip when it is a refused commit
    failed: bool  # a fetch, an apply or a repair failed: retried with backoff
    drifted: tuple[str, ...]  # resources that still differ from the applied commit
    next_delay: float  # seconds until the next cycle should run

    @property
    def in_sync(self) -> bool:
        """The environment is at the branch tip, nothing failed, and nothing is left drifted."""
        return (
            not self.failed
            and self.branch_commit is not None
            and self.applied_commit == self.branch_commit
            and not self.drifted
        )


@dataclass
class Status:
    """The reconciler's memory between cycles; persisted to ``status.json`` and rebuilt from the audit log."""

    environment: str
    repo: str
    branch: str
    applied: str | None = None
    applied_at: str | None = None
    branch_commit: str | None = None
    refused: str | None = None
    refused_reason: str = ""
    failures: int = 0
    last_error: str = ""
    drift: list[str] = field(default_factory=list)
    last_monitoring: float | None = None  # epoch seconds
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


class GitError(MlspecError):
    """A git command failed (fetch, clone, checkout)."""


class _Refusal(Exception):
    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


class _Failure(Exception):
    pass


def default_actor() -> str:
    """Who the reconciler applies as: MLSPEC_ACTOR, else ``mlspec-reconcile@<host>``."""
    return os.environ.get("MLSPEC_ACTOR") or f"mlspec-reconcile@{socket.gethostname()}"


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds before retry number ``failures`` (1, 2, ...): base, 2*base, 4*base, ... at most cap."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


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
        self.repo = _normalise_url(repo)
        self.branch = branch
        self.workdir = workdir
        self.clone = workdir / CLONE
        self.interval = interval
        self.actor = actor or default_actor()
        self.gnupg_home = gnupg_home
        self.allow_destroy = allow_destroy
        self.monitoring = monitoring
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.progress = progress
        self.clock = clock
        self._status: Status | None = None
        self._held = 0
        self._history_loaded = False
        self._graphs: dict[str, ResolvedGraph | None] = {}

    # the loop
    def run(self, stop: Stopper, on_event: Callable[[Event], None] = lambda _: None) -> None:
        """Cycle until ``stop`` is set; a stop request is honoured between steps, never in an apply."""
        with self._workdir_lock():
            while not stop.is_set():
                try:
                    result = self.cycle(stop)
                except UsageError:
                    raise
                except Exception as exc:  # state database, file system: report, back off, go on
                    status = self._state()
                    status.failures += 1
                    status.last_error = f"cycle failed: {_describe(exc)}"
                    on_event(Event("failed", status.last_error))
                    stop.wait(backoff(status.failures, self.backoff_base, self.backoff_cap))
                    continue
                for event in result.events:
                    on_event(event)
                stop.wait(result.next_delay)

    def status(self) -> Status:
        """The reconciler's current view (from ``status.json``/audit the first time)."""
        return self._state()

    # one cycle
    def cycle(self, stop: Stopper | None = None) -> CycleResult:
        """Fetch; apply a new commit, or find (and repair) drift; run monitoring when due."""
        stopping = stop.is_set if stop is not None else (lambda: False)
        with self._workdir_lock():
            events: list[Event] = []
            self._status = None  # another reconciler may have used this work folder since: read it again
            status = self._state()
            try:
                tip = self._fetch()
            except GitError as exc:
                events.append(Event("fetch-failed", f"fetch of {self.branch} failed: {exc.message}"))
                return self._finish(events, failed=True)
            status.branch_commit = tip
            self._load_history()
            failed = False
            new = tip not in (status.applied, status.refused)
            if new and not stopping():
                failed = not self._reconcile_commit(tip, events)
            if not failed and not (new and status.applied == tip) and status.applied and not stopping():
                failed = not self._reconcile_drift(events)
            if not failed and status.applied and not stopping():
                self._monitor(events)
            return self._finish(events, failed=failed)

    # steps
    def _reconcile_commit(self, tip: str, events: list[Event]) -> bool:
        """Check and apply a new commit. False when it failed (retry); a refusal is not a failure."""
        from mlspec.apply.workflow import PlanRefused, apply_environment

        status = self._state()
        previous = status.applied
        short = tip[:12]
        anchor = self._env_spec(previous) if previous else None
        try:
            self._checkout(tip)
            try:
                project = self._project()
            except MlspecError as exc:
                self._check_signature(tip, anchor, None)
                raise _Refusal(exc.message) from None
            validation = project.validate()
            resolution = project.resolve(self.environment, validation)
            spec = resolution.graph.env.spec if resolution.graph is not None else None
            self._graphs[tip] = resolution.graph if resolution.ok else None
            self._check_signature(tip, anchor, spec)
            if resolution.graph is None or not resolution.ok:
                raise _Refusal(_spec_errors(resolution.diagnostics, self.environment))
            assert spec is not None
            try:
                result, applied = apply_environment(
                    project, self.environment, refresh=spec.self_heals, allow_destroy=self.allow_destroy,
                    who=self.actor, progress=self.progress,
                )  # fmt: skip
            except PlanRefused as exc:
                raise _Refusal(*_refusal_reason(project, self.environment, exc, validation)) from None
            if result.plan is None:
                raise _Refusal(_spec_errors(result.diagnostics, self.environment))
            if applied is not None and not applied.ok:
                bad = [r for r in applied.results if r.status != "applied"]
                detail = "; ".join(f"{r.ref}: {r.status}: {r.error}" for r in bad[:3])
                raise _Failure(f"{len(bad)} change(s) failed or skipped ({detail})")
        except _Refusal as refusal:
            self._refuse(tip, previous, refusal, events)
            return True
        except _Failure as exc:
            self._fail(tip, f"commit {short}: apply failed: {exc}", events)
            return False
        except GitError as exc:
            self._fail(tip, f"commit {short}: checkout failed: {exc.message}", events)
            return False
        except Exception as exc:  # target errors, locks, the file system: retried
            self._fail(tip, f"commit {short}: apply failed: {_describe(exc)}", events)
            return False
        count = sum(1 for r in applied.results if r.status == "applied") if applied is not None else 0
        message = f"commit {short}: applied {count} change{'s' if count != 1 else ''}"
        if applied is None:
            message = f"commit {short}: applied (nothing to change)"
        status.applied, status.applied_at = tip, _now()
        status.refused, status.refused_reason, status.failures, status.last_error = None, "", 0, ""
        status.drift = []
        seq = applied.audit.seq if applied is not None and applied.audit is not None else None
        self._record(project, "applied", tip, message, {"applied_changes": count, "apply_audit": seq})
        events.append(Event("applied", message, tip))
        return True

    def _check_signature(self, tip: str, anchor: EnvironmentSpec | None, spec: EnvironmentSpec | None) -> None:
        """Refuse an unsigned or untrusted commit where the last applied (or this) commit requires signatures.

        The keys come from the last applied commit when it requires signatures, so a commit
        cannot trust itself in; the commit that turns signing on must be signed by a key it names.
        """
        from mlspec.gitops.signing import verify_commit

        settings = anchor.reconcile if anchor is not None and anchor.reconcile.require_signed_commits else None
        if settings is None and spec is not None and spec.reconcile.require_signed_commits:
            settings = spec.reconcile
        if settings is None:
            return
        check = verify_commit(self.clone, tip, settings.trusted_keys, gnupg_home=self.gnupg_home)
        if not check.ok:
            reason = f"{check.message}; '{self.environment}' applies only commits signed by a trusted key"
            raise _Refusal(reason, {"signature": check.verdict, "signed_by": check.fingerprint})

    def _refuse(self, tip: str, previous: str | None, refusal: _Refusal, events: list[Event]) -> None:
        status = self._state()
        message = f"commit {tip[:12]}: refused: {refusal.reason}"
        status.refused, status.refused_reason = tip, refusal.reason
        status.failures, status.last_error = 0, ""
        if previous is not None:
            self._checkout(previous)  # stay on the last good commit (and record into its state)
        with contextlib.suppress(MlspecError):
            self._record(self._project(), "refused", tip, message, {"reason": refusal.reason, **refusal.details})
        events.append(Event("refused", message, tip))

    def _fail(self, commit: str, message: str, events: list[Event]) -> None:
        status = self._state()
        status.failures += 1
        status.last_error = message
        with contextlib.suppress(Exception):
            self._record(self._project(), "failed", commit, message, {"attempt": status.failures})
        events.append(Event("failed", message, commit))

    def _reconcile_drift(self, events: list[Event]) -> bool:
        """Compare the live target with the last applied commit; repair or report. False when a repair failed."""
        from mlspec.apply.workflow import apply_environment, plan_environment

        status = self._state()
        commit = status.applied
        assert commit is not None
        try:
            self._checkout(commit)
            project = self._project()
            result = plan_environment(project, self.environment, refresh=True)
        except Exception as exc:
            self._fail(commit, f"drift check at {commit[:12]} failed: {_describe(exc)}", events)
            return False
        if result.plan is None or result.graph is None:
            self._fail(commit, f"drift check at {commit[:12]} failed: the applied commit no longer plans", events)
            return False
        pending = result.plan.pending
        drifted = [c.ref for c in pending]
        if not drifted:
            status.drift = []
            return True
        kinds = {c.ref: _drift_kind(c.action, c.reasons) for c in pending}
        if not result.graph.env.spec.self_heals:
            if sorted(drifted) != sorted(status.drift):  # report each new drift once
                for ref in drifted:
                    message = f"{kinds[ref]} in {ref}: reported (self_heal is off)"
                    events.append(Event("drift", message, commit, (ref,)))
                self._record(project, "drift", commit, f"{len(drifted)} resource(s) drifted: reported", {
                    "resources": {ref: kinds[ref] for ref in drifted}, "action": "reported",
                })  # fmt: skip
            status.drift = drifted
            return True
        try:
            _, applied = apply_environment(
                project, self.environment, refresh=True, allow_destroy=self.allow_destroy,
                who=self.actor, progress=self.progress,
            )  # fmt: skip
        except Exception as exc:
            status.drift = drifted
            self._fail(commit, f"self-heal at {commit[:12]} failed: {_describe(exc)}", events)
            return False
        healed = {r.ref for r in applied.results if r.status == "applied"} if applied is not None else set()
        left = [ref for ref in drifted if ref not in healed]
        for ref in drifted:
            outcome = "self-healed" if ref in healed else "repair failed"
            events.append(Event("self-healed" if ref in healed else "failed", f"{kinds[ref]} in {ref}: {outcome}",
                                commit, (ref,)))  # fmt: skip
        self._record(project, "self-healed", commit, f"{len(healed)} drifted resource(s) self-healed", {
            "resources": {ref: kinds[ref] for ref in drifted}, "healed": sorted(healed), "failed": left,
            "apply_audit": applied.audit.seq if applied is not None and applied.audit is not None else None,
        })  # fmt: skip
        status.drift = left
        if left:
            status.failures += 1
            status.last_error = f"self-heal left {len(left)} resource(s) drifted"
            return False
        return True

    def _monitor(self, events: list[Event]) -> None:
        """Drift monitoring of a local-tier environment's served traffic, at the shortest schedule."""
        if not self.monitoring:
            return
        from mlspec.apply.workflow import runs_engines

        status = self._state()
        graph = self._graph(status.applied)
        if graph is None or not runs_engines(graph):
            return
        every = monitoring_interval(graph)
        now = self.clock()
        project = self._project()
        if every is None or (status.last_monitoring is not None and now - status.last_monitoring < every):
            return
        from mlspec.targets.local.operations import monitor

        status.last_monitoring = now
        try:
            outcomes = monitor(project, self.environment, progress=self.progress)
        except Exception as exc:
            events.append(Event("monitoring-failed", f"monitoring failed: {_describe(exc)}", status.applied or ""))
            return
        for outcome in outcomes:
            ref = f"Deployment/{outcome.deployment}"
            verdict = f"drift detected, {outcome.action}" if outcome.drifted else "no drift"
            events.append(Event("monitoring", f"monitoring {ref}: {verdict}: {outcome.message}", status.applied or "",
                                (ref,)))  # fmt: skip

    # bookkeeping
    def _finish(self, events: list[Event], *, failed: bool) -> CycleResult:
        status = self._state()
        if not failed:
            status.failures, status.last_error = 0, ""
        elif not any(e.kind == "failed" for e in events):  # a fetch failure: the steps count their own
            status.failures += 1
            status.last_error = next((e.message for e in events if e.kind == "fetch-failed"), status.last_error)
        status.updated_at = _now()
        self._write_status()
        delay = backoff(status.failures, self.backoff_base, self.backoff_cap) if failed else self._interval()
        if not failed and self.monitoring and status.last_monitoring is not None:
            every = self._monitoring_every
            if every is not None:
                delay = max(0.0, min(delay, status.last_monitoring + every - self.clock()))
        return CycleResult(
            self.environment, status.branch_commit, status.applied, tuple(events),
            status.refused if status.refused == status.branch_commit else None, failed, tuple(status.drift), delay,
        )  # fmt: skip

    @property
    def _monitoring_every(self) -> float | None:
        from mlspec.apply.workflow import runs_engines

        graph = self._graph(self._state().applied)
        return monitoring_interval(graph) if graph is not None and runs_engines(graph) else None

    def _interval(self) -> float:
        """--interval, else the applied commit's ``reconcile.interval``, else 60 s."""
        if self.interval is not None:
            return self.interval
        from mlspec.spec.base import duration_seconds

        spec = self._env_spec(self._state().applied)
        return float(duration_seconds(spec.reconcile.interval if spec is not None else "60s"))

    def _record(self, project: Project, event: str, commit: str, message: str, extra: dict[str, Any]) -> None:
        from mlspec.apply.workflow import state_store

        store = state_store(project)
        try:
            store.append_audit(self.environment, self.actor, commit, "", {
                "type": "reconcile", "event": event, "commit": commit, "message": message,
                "repo": self.repo, "branch": self.branch, **extra,
            })  # fmt: skip
        finally:
            store.close()

    def _state(self) -> Status:
        if self._status is None:
            self._status = self._read_status()
        return self._status

    def _read_status(self) -> Status:
        path = self.workdir / STATUS
        fresh = Status(self.environment, self.repo, self.branch)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(Status)}
            loaded = Status(**{k: v for k, v in data.items() if k in known})
            if (loaded.environment, loaded.repo, loaded.branch) == (self.environment, self.repo, self.branch):
                return loaded
        except (OSError, ValueError, TypeError):
            pass
        return fresh

    def _load_history(self) -> None:
        """The audit log is the durable record of what was applied and refused; status.json only mirrors it."""
        if self._history_loaded:
            return
        self._history_loaded = True
        status = self._state()
        try:
            project = self._project()
        except MlspecError:
            return  # nothing checked out yet: nothing was applied from this clone
        from mlspec.apply.workflow import state_store

        store = state_store(project)
        try:
            records = [
                r.record for r in store.audit(self.environment)
                if r.record.get("type") == "reconcile" and r.record.get("branch") == self.branch
            ]  # fmt: skip
        finally:
            store.close()
        applied = next((r for r in reversed(records) if r.get("event") == "applied"), None)
        status.applied = str(applied["commit"]) if applied else None
        later = records[records.index(applied) + 1 :] if applied else records
        refused = next((r for r in reversed(later) if r.get("event") == "refused"), None)
        status.refused = str(refused["commit"]) if refused else None
        status.refused_reason = str(refused.get("reason", "")) if refused else ""

    def _write_status(self) -> None:
        from mlspec.atomic import atomic_write

        text = json.dumps(self._state().to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write(self.workdir / STATUS, text.encode())

    @contextlib.contextmanager
    def _workdir_lock(self) -> Iterator[None]:
        """One reconciler per work folder (an exclusive, non-blocking flock, released when the process ends)."""
        import fcntl

        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another reconciler is running in {self.workdir}") from None
            self._held = 1
            try:
                yield
            finally:
                self._held = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    # git
    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        try:
            proc = subprocess.run(
                ["git", *(["-C", str(cwd)] if cwd else []), *args],
                capture_output=True, text=True, env=env, timeout=300, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitError(f"git {args[0]}: {exc}") from None
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()
            raise GitError(f"git {args[0]}: {detail[-1] if detail else f'exit {proc.returncode}'}")
        return proc.stdout.strip()

    def _fetch(self) -> str:
        """Clone on first use, then fetch the branch; the branch tip's commit."""
        if not (self.clone / ".git").exists():
            self.clone.parent.mkdir(parents=True, exist_ok=True)
            self._git("clone", "--quiet", "--single-branch", "--branch", self.branch,
                      self.repo, str(self.clone))  # fmt: skip
        else:
            origin = self._git("remote", "get-url", "origin", cwd=self.clone)
            if _normalise_url(origin) != self.repo:
                raise UsageError(
                    f"{self.clone} is a clone of {origin}, not {self.repo}",
                    hint="use another --workdir for another repository",
                )
        remote = f"refs/remotes/origin/{self.branch}"
        self._git("fetch", "--quiet", "--prune", "origin", f"+refs/heads/{self.branch}:{remote}", cwd=self.clone)
        return self._git("rev-parse", "--verify", f"{remote}^{{commit}}", cwd=self.clone)

    def _checkout(self, commit: str) -> None:
        """Put the clone's files at ``commit``; mlspec's own untracked files (state, outputs) stay."""
        with contextlib.suppress(GitError):
            if self._git("rev-parse", "HEAD", cwd=self.clone) == commit:
                return
        self._git("checkout", "--quiet", "--force", "--detach", commit, cwd=self.clone)

    def _project(self) -> Project:
        """The project as checked out in the clone (never one found above it)."""
        from mlspec.load.discovery import PROJECT_FILE
        from mlspec.project import Project

        if not (self.clone / PROJECT_FILE).is_file():
            raise MlspecError(f"no {PROJECT_FILE} at the root of {self.repo} at this commit")
        return Project.open(self.clone)

    def _graph(self, commit: str | None) -> ResolvedGraph | None:
        """The environment resolved at ``commit`` (cached per commit), or None when it does not resolve."""
        if commit is None:
            return None
        if commit not in self._graphs:
            try:
                self._checkout(commit)
                self._graphs[commit] = self._project().resolve(self.environment).graph
            except MlspecError:
                return None
        return self._graphs[commit]

    def _env_spec(self, commit: str | None) -> EnvironmentSpec | None:
        """The environment's spec at ``commit``, or None when it does not resolve there."""
        graph = self._graph(commit)
        return graph.env.spec if graph is not None else None


def _normalise_url(url: str) -> str:
    """A local path made absolute (so it means the same from any folder); URLs as given."""
    if "://" in url or (":" in url.split("/", 1)[0] and not Path(url).exists()):
        return url
    return str(Path(url).expanduser().resolve())


def _now() -> str:
    from mlspec.state.sqlite import now

    return now()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MlspecError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _drift_kind(action: str, reasons: tuple[str, ...]) -> str:
    if any(r.startswith("drift:") for r in reasons):
        return "drift"
    return {"create": "missing", "delete": "not in the commit"}.get(action, "out of sync")


def _spec_errors(diagnostics: Any, environment: str) -> str:
    errors = [d for d in diagnostics if d.severity == "error"]
    if not errors:
        return f"environment '{environment}' does not resolve at this commit"
    first = errors[0]
    return f"{len(errors)} spec error(s) ({first.location}: {first.code}: {first.message})"


def _refusal_reason(
    project: Project, environment: str, exc: MlspecError, validation: Any
) -> tuple[str, dict[str, Any]]:
    """A refused plan's reason: the policy denies, named, when policies refused it."""
    if "policy" not in exc.message:
        return exc.message, {}
    checked = project.check([environment], validation=validation)
    blocking = [f for f in checked.findings if f.blocking]
    if not blocking:
        return exc.message, {}
    named = "; ".join(f"{f.policy} on {f.resource}: {f.message}" for f in blocking[:3])
    more = f"; +{len(blocking) - 3} more" if len(blocking) > 3 else ""
    reason = f"{len(blocking)} policy deny ({named}{more})"
    findings = [{"policy": f.policy, "resource": f.resource, "message": f.message} for f in blocking]
    return reason, {"findings": findings}
