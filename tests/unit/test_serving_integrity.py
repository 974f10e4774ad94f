"""A model file replaced on disk while the server runs stops serving: found by the server's watch within
seconds, and on a reload, never served in place of the verified bytes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from tests.unit.test_serving import STABLE_W, Server, linear_onnx, variant


def wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_replaced_model_file_stops_serving(serve: Callable[..., Server], tmp_path: Path) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable])
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 200
    forged = tmp_path / "forged.onnx"
    linear_onnx(forged, [9.0, 9.0, 9.0])  # a valid model, not the verified one
    os.replace(forged, stable["path"])
    assert wait_for(lambda: srv.infer([[1.0, 2.0, 3.0]])[0] == 503)
    status, err = srv.infer([[1.0, 2.0, 3.0]])
    assert status == 503 and "no variant is ready" in err["error"]
    assert srv.request("GET", "/v2/health/ready")[0] == 503
    assert "stops serving: its model file changed on disk" in srv.log.read_text()


def test_a_reload_re_verifies_an_unchanged_configuration(serve: Callable[..., Server], tmp_path: Path) -> None:
    stable = variant(tmp_path, "stable", "3", STABLE_W)
    srv = serve([stable])
    path = Path(stable["path"])
    original = path.stat()
    other = tmp_path / "other.onnx"
    linear_onnx(other, [5.0, 5.0, 5.0])
    path.write_bytes(other.read_bytes())  # same inode, new bytes: a SIGHUP must still notice
    os.utime(path, ns=(original.st_atime_ns, original.st_mtime_ns))  # and the watch would not (same identity)
    os.kill(srv.pid, signal.SIGHUP)
    assert wait_for(lambda: "stops serving: its model file changed on disk" in srv.log.read_text())
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 503
