"""Content-hash cache for rendered bytes: identical inputs are never rendered twice.

Keys are sha256 of a renderer's name and version, the digest of mlspec's own source
code, and the canonical JSON of every input that shapes the output, so a change
anywhere in those inputs, or in the code that turns them into bytes, is a new key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.hashing import canonical, source_digest


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
        return hashlib.sha256(f"{namespace}\0{source_digest()}\0{canonical(inputs)}".encode()).hexdigest()

    def lookup(self, namespace: str, inputs: Any) -> bytes | None:
        """Cached bytes for these inputs, if any."""
        key = self.key(namespace, inputs)
        found = self._memory.get(key)
        if found is None and self.directory is not None:
            path = self.directory / key[:2] / key
            if path.is_file():
                found = path.read_bytes()
                self._memory[key] = found
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def store(self, namespace: str, inputs: Any, content: bytes) -> None:
        """Remember ``content`` as the output for these inputs."""
        key = self.key(namespace, inputs)
        self._memory[key] = content
        if self.directory is not None:
            atomic_write(self.directory / key[:2] / key, content)

    def get_or_build(self, namespace: str, inputs: Any, build: Callable[[], bytes]) -> bytes:
        """Cached bytes for these inputs, or ``build()``'s result, stored for next time."""
        found = self.lookup(namespace, inputs)
        if found is None:
            found = build()
            self.store(namespace, inputs, found)
        return found
