"""One reconciler per work folder: an exclusive, non-blocking flock that the holder may take again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from mlspec.errors import UsageError


class WorkdirLock:
    """``with lock.held():`` holds ``<workdir>/.lock``; nested uses by the holder are free.

    The lock is released when the outermost ``with`` ends, or when the process ends.
    Another process (or another lock object) finds it taken: UsageError.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._depth = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block."""
        import fcntl

        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UsageError(f"another reconciler is running in {self.workdir}") from None
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)
