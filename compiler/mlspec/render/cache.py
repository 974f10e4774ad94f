"""Content-hash cache for rendered bytes: identical inputs are never rendered twice.

Keys are sha256 of a renderer's name and version plus the canonical JSON of every
input that shapes the output, so a change anywhere in those inputs is a new key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlspec.render.serialize import canonical


class RenderCache:
    """A folder of cached outputs plus an in-memory layer; safe to share between processes."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, bytes] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(namespace: str, inputs: Any) -> str:
        """The cache key of ``inputs`` within ``namespace``."""
        return hashlib.sha256(f"{namespace}\0{canonical(inputs)}".encode()).hexdigest()

    def get_or_build(self, namespace: str, inputs: Any, build: Callable[[], bytes]) -> bytes:
        """Cached bytes for these inputs, or ``build()``'s result, stored for next time."""
        key = self.key(namespace, inputs)
        found = self._memory.get(key)
        path = self.directory / key[:2] / key if self.directory else None
        if found is None and path is not None and path.is_file():
            found = path.read_bytes()
        if found is not None:
            self.hits += 1
            self._memory[key] = found
            return found
        self.misses += 1
        content = build()
        self._memory[key] = content
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            os.replace(tmp, path)  # atomic: a reader sees the old entry or the whole new one
        return content
