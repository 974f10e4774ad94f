"""Start, stop and check a detached model server process (one per Deployment)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlspec.serving.client import is_ready

LISTENING = re.compile(r"listening on (https?://\S+)")


class ServingStartError(RuntimeError):
    """The server exited or never became ready; the message carries its log's tail."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _reap(pid: int) -> bool:
    """Collect ``pid`` when it is our exited child; True when it has exited."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def _ca_file(config_path: str | Path) -> str | None:
    try:
        tls = json.loads(Path(config_path).read_text()).get("tls") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return tls.get("ca_file") if isinstance(tls, dict) else None


def start(config_path: str | Path, log_file: str | Path, timeout: float = 60.0) -> int:
    """Start ``python -m mlspec.serving --config config_path`` detached, output appended to ``log_file``.

    Returns the pid once the server answers ready (over TLS, trusting the config's ``tls.ca_file``, when it
    serves TLS); raises ServingStartError with the log's tail when it exits first or is not ready within
    ``timeout`` seconds (it is then stopped).
    """
    ca_file = _ca_file(config_path)
    log_path = Path(log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    offset = log_path.stat().st_size if log_path.exists() else 0
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlspec.serving", "--config", str(Path(config_path).resolve())],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + timeout
    url: str | None = None
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise ServingStartError(f"model server exited with code {code}:\n{_tail(log_path)}")
        if url is None:
            try:
                with open(log_path, "rb") as handle:
                    handle.seek(offset)
                    found = LISTENING.search(handle.read().decode("utf-8", "replace"))
                url = found.group(1) if found else None
            except OSError:
                url = None
        if url is not None and is_ready(url, timeout=1.0, ca_file=ca_file):
            return proc.pid
        time.sleep(0.05)
    stop(proc.pid)
    raise ServingStartError(f"model server not ready after {timeout:g} s:\n{_tail(log_path)}")


def is_running(pid: int) -> bool:
    """True while process ``pid`` exists (an exited child of ours is reaped, not counted)."""
    if pid <= 0:
        return False
    if _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM ``pid`` (it flushes its request log and exits), SIGKILL after ``timeout``; True when it was running."""
    if not is_running(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        if not is_running(pid):
            break
        time.sleep(0.02)
    return True


PROC = Path("/proc")


def command_line(pid: int) -> list[str] | None:
    """The process's arguments as /proc shows them, or None (gone, or no /proc)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode("utf-8", "replace").split("\0")[:-1] if raw else None


def _serves(arguments: list[str], config: str) -> bool:
    """Whether a command line is ``... -m mlspec.serving --config <config> ...`` (how :func:`start` runs it)."""
    wanted = ["-m", "mlspec.serving", "--config", config]
    return any(arguments[i : i + len(wanted)] == wanted for i in range(len(arguments) - len(wanted) + 1))


def server_pid(config_path: str | Path, pid_file: str | Path) -> int | None:
    """The pid of the running server of ``config_path``, found by its command line, not taken on trust.

    Where /proc exists (Linux), a pid counts only when that process runs ``mlspec.serving`` with this
    config: a stale or forged pid file naming another process is ignored, and a server started just before
    a crash (before its pid file was written) is still found, by scanning the processes. Elsewhere the pid
    file is all there is.
    """
    config = str(Path(config_path).resolve())
    try:
        recorded: int | None = int(Path(pid_file).read_text())
    except (OSError, ValueError):
        recorded = None
    if not PROC.is_dir():
        return recorded if recorded is not None and is_running(recorded) else None
    candidates = [recorded] if recorded is not None else []
    candidates += [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    for pid in candidates:
        arguments = command_line(pid)
        if arguments is not None and _serves(arguments, config) and is_running(pid):
            return pid
    return None
