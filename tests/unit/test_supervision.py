"""What a killed apply left running is finished by the next one: real processes marked as an apply marks its
children, with the owning apply dead or alive, and a model server that must survive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlspec.targets.local.supervision import VARIABLE, environment_key, leftovers, supervised
from tests.unit.test_server_identity import sleeper

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finding processes by environment needs /proc")


def spawn(marker: str, *argv: str) -> subprocess.Popen[bytes]:
    """A sleeping process carrying ``marker`` (and ``argv`` on its command line)."""
    return sleeper(*argv, env={VARIABLE: marker})


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_the_next_apply_finishes_what_a_killed_one_left_and_spares_servers_and_live_applies(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    key = environment_key(tmp_path, "local")
    orphan_step = spawn(f"{key}:{dead_pid()}:a1")  # a Feast or pipeline-step process of a killed apply
    server = spawn(f"{key}:{dead_pid()}:a1", "-m", "mlspec.serving", "--config", "x.json")  # meant to outlive it
    running = spawn(f"{key}:{os.getpid()}:b2")  # a child of an apply that is still alive
    other = spawn(f"{environment_key(tmp_path, 'dev')}:{dead_pid()}:c3")  # another environment's
    processes += [orphan_step, server, running, other]
    assert leftovers(key) == [orphan_step.pid]
    said: list[str] = []
    with supervised(tmp_path, "local", said.append):
        assert orphan_step.wait(timeout=10) is not None  # ended before this apply does anything
        marker = os.environ[VARIABLE]
        assert marker.startswith(f"{key}:{os.getpid()}:")
        child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{VARIABLE}'])"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        assert child.stdout.strip() == marker  # what this apply starts carries its mark
    assert VARIABLE not in os.environ
    assert said == ["finished 1 process(es) a previous, interrupted apply of 'local' left running"]
    assert all(p.poll() is None for p in (server, running, other))


def test_monitor_marks_what_it_starts_and_finishes_what_a_killed_apply_left(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlspec.app import operations
    from mlspec.app.project import Project
    from mlspec.scaffold import scaffold

    root = tmp_path / "bank-ml"
    scaffold(root)
    orphan = spawn(f"{environment_key(root, 'local')}:{dead_pid()}:a1")  # a retraining step of a killed monitor
    processes.append(orphan)
    seen: list[str | None] = []
    real = operations.settle_rollouts

    def settle(*args: object, **kwargs: object) -> list[str]:
        seen.append(os.environ.get(VARIABLE))  # what monitor's retraining and scoring processes inherit
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(operations, "settle_rollouts", settle)
    said: list[str] = []
    assert operations.monitor(Project.open(root), "local", progress=said.append) == []
    assert orphan.wait(timeout=10) is not None
    assert said[0] == "finished 1 process(es) a previous, interrupted apply of 'local' left running"
    assert len(seen) == 1 and seen[0] is not None and seen[0].startswith(f"{environment_key(root, 'local')}:")
