"""Run a compiled pipeline YAML (training or batch scoring) on this machine with the KFP local runner (no Docker).

Every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``),
so the environment must have mlspec and the training extras installed. The
pipeline's output (the register step's or the score step's summary JSON) is returned parsed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TAIL_CHARS = 4000
_TASK_LINE = re.compile(r"Task '([^']+)' finished with status (\w+)")
_INNER = re.compile(r"Inner task failed: '([^']+)'")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PipelineRunError(RuntimeError):
    """A step of the pipeline failed; the message names it and ends with its log's tail."""

    def __init__(self, step: str | None, log_tail: str) -> None:
        self.step = step
        self.log_tail = log_tail
        where = f"step '{step}'" if step else "a step"
        super().__init__(f"pipeline failed at {where}:\n{log_tail}")


class _Tee(io.TextIOBase):
    """Keeps what is written and passes it on."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        if self.target is not None:
            self.target.write(text)
        return len(text)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def fileno(self) -> int:  # subprocess handles may ask; the runner streams through Python
        raise io.UnsupportedOperation("fileno")


def _failed_step(log: str) -> tuple[str | None, str]:
    clean = _ANSI.sub("", log)
    failed = [m.group(1) for m in _TASK_LINE.finditer(clean) if m.group(2).upper() != "SUCCESS"]
    inner = _INNER.search(clean)
    step = inner.group(1) if inner else (failed[0] if failed else None)
    if step:
        # the tail of what that step printed: from its start line to its failure line
        start = clean.rfind(f"Executing task '{step}'")
        end = clean.find(f"Task '{step}' finished", start if start >= 0 else 0)
        section = clean[start if start >= 0 else 0 : end if end >= 0 else None]
        return step, section[-TAIL_CHARS:]
    return None, clean[-TAIL_CHARS:]


@contextlib.contextmanager
def _offline_pip() -> Iterator[None]:
    """kfp is installed here, so the components' pip step needs no index: say so for the run only (set for
    good, it made every later pip of this process, such as an image build's, find nothing)."""
    wanted = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    before = {name: os.environ.get(name) for name in wanted}
    os.environ.update({name: value for name, value in wanted.items() if before[name] is None})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)


def run_pipeline(
    pipeline_yaml: Path, arguments: dict[str, Any], pipeline_root: Path, *, echo: bool = False
) -> dict[str, Any]:
    """Run the compiled pipeline locally and return its output (a summary JSON), parsed.

    ``arguments`` are pipeline parameters; ``environment`` must be a RuntimeContext as JSON.
    Raises :class:`PipelineRunError` naming the failed step with the tail of its log.
    """
    from kfp import components, local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline = components.load_component_from_file(str(pipeline_yaml))
    captured = _Tee(sys.stdout if echo else None)
    handler = logging.StreamHandler(captured)
    kfp_logger = logging.getLogger("kfp")
    kfp_logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), _offline_pip():
            task = pipeline(**arguments)
    except Exception as error:
        step, tail = _failed_step("".join(captured.parts) + f"\n{type(error).__name__}: {error}")
        raise PipelineRunError(step, tail) from error
    finally:
        kfp_logger.removeHandler(handler)
    summary: dict[str, Any] = json.loads(task.output)
    return summary
