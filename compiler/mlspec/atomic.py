"""Atomic file writes, with no dependencies: the model server and pipeline steps use it as well as the CLI."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask now (mlspec.private may have narrowed it): from /proc on Linux, which reads it without
    changing it (setting and restoring it would briefly widen it for other threads), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    previous = os.umask(0o077)
    os.umask(previous)
    return previous


def atomic_write(path: Path, content: bytes, *, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` atomically and durably: readers see the old file or the whole new one.

    The bytes are flushed to disk before the rename, so a crash never leaves an
    empty or partial file under the final name. ``mode`` is applied under the umask
    (temporary files are created 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
