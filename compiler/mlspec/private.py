"""Files mlspec and the engines it starts write on this machine are their owner's only.

The local platform's stores hold customer data and keys: Feast's online and offline stores, batch
predictions, request logs, MLflow's and mlspec's databases. ``private_files()`` sets the process umask to
0o077 while an apply, a destroy, a rollback, a monitor or a scoring run works (child processes inherit it),
so every file they create is 0600 and every folder 0700, whatever the engine that creates it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Create files 0600 and folders 0700 inside the block (in this process and those it starts)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
