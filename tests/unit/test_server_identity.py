"""A model server is known by its command line, never by a pid file alone: a forged or stale pid file does not
make mlspec stop another process, and a server whose pid file was never written is still found."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlspec.serving import process

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finding processes by command line needs /proc")


def sleeper(*extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A process whose command line ends in ``extra`` (with ``env`` added to ours), returned once the kernel shows
    that command line (right after fork, /proc still shows the parent's: a loaded machine makes that window long)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", *extra], env={**os.environ, **(env or {})}
    )
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"time.sleep(120)" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def test_a_server_is_found_by_its_command_line_without_a_pid_file(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = tmp_path / "fraud-api" / "config.json"
    config.parent.mkdir()
    config.write_text("{}")
    server = sleeper("-m", "mlspec.serving", "--config", str(config))  # what process.start runs
    other = sleeper("-m", "mlspec.serving", "--config", str(tmp_path / "other" / "config.json"))
    processes += [server, other]
    assert process.server_pid(config, tmp_path / "fraud-api" / "server.pid") == server.pid


def test_a_forged_pid_file_is_not_trusted(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    config = tmp_path / "fraud-api" / "config.json"
    config.parent.mkdir()
    config.write_text("{}")
    bystander = sleeper()
    processes.append(bystander)
    pid_file = tmp_path / "fraud-api" / "server.pid"
    pid_file.write_text(str(bystander.pid))
    assert process.server_pid(config, pid_file) is None  # no server runs: the bystander is not one
    server = sleeper("-m", "mlspec.serving", "--config", str(config))
    processes.append(server)
    assert process.server_pid(config, pid_file) == server.pid
    assert bystander.poll() is None, "the bystander was left alone"
