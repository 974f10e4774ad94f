"""Processes an apply starts are never lost: the next apply finishes what a crashed one left running.

While an apply runs, ``MLSPEC_APPLY_OF=<environment key>:<apply pid>:<id>`` is in its environment, so every
process it starts (Feast, the KFP local runner's step processes, their children) carries it. An apply killed at
any moment (SIGKILL included) cannot clean up; the next apply of the same environment, holding the lock, finds
processes that carry the variable of an apply that is no longer alive and ends them (SIGTERM, then SIGKILL)
before it does anything, and says so. Model servers carry it too but are not ended: they are meant to outlive
the apply and are adopted by their command line (:func:`mlspec.serving.process.server_pid`). ``mlspec monitor``
(retraining after drift, due batch scoring) runs the same way: it marks what it starts and finishes what a killed
apply or monitor of the environment left.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from mlspec.serving.process import command_line, is_running

VARIABLE = "MLSPEC_APPLY_OF"
SERVER_MODULES = ("mlspec.serving", "mlspec.serving.kserve")
GRACE = 3.0


def environment_key(project_root: Path, environment: str) -> str:
    """A key for one environment of one project checkout (the variable's first part)."""
    digest = hashlib.sha256(str(project_root.resolve()).encode()).hexdigest()[:16]
    return f"{digest}/{environment}"


def _marked(pid: int) -> str | None:
    """The process's MLSPEC_APPLY_OF value, or None (no such variable, gone, or not ours to read)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = VARIABLE.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def _is_server(pid: int) -> bool:
    arguments = command_line(pid) or []
    return any(a == "-m" and b in SERVER_MODULES for a, b in itertools.pairwise(arguments))


def leftovers(key: str) -> list[int]:
    """Processes started by an apply of ``key`` that is no longer alive (model servers excepted)."""
    if not Path("/proc").is_dir():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        value = _marked(pid)
        if value is None or not value.startswith(key + ":"):
            continue
        owner = value[len(key) + 1 :].split(":", 1)[0]
        if owner.isdigit() and not is_running(int(owner)) and not _is_server(pid):
            found.append(pid)
    return found


def finish(pids: list[int]) -> int:
    """End ``pids`` (SIGTERM, then SIGKILL after a grace period); returns how many were still running."""
    ended = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            ended += 1
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and any(is_running(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return ended


@contextlib.contextmanager
def supervised(project_root: Path, environment: str, progress: Callable[[str], None]) -> Iterator[None]:
    """Finish what a crashed apply of this environment left running, then mark every process this apply starts."""
    key = environment_key(project_root, environment)
    stale = leftovers(key)
    if stale:
        count = finish(stale)
        progress(f"finished {count} process(es) a previous, interrupted apply of '{environment}' left running")
    before = os.environ.get(VARIABLE)
    os.environ[VARIABLE] = f"{key}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = before
