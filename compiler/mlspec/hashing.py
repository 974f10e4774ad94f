"""Content hashing: canonical JSON and digests that change exactly when the content does."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def canonical(data: Any) -> str:
    """Compact canonical JSON of plain data (sorted keys), for hashing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def digest(*parts: str) -> str:
    """sha256 of the parts, joined unambiguously."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


SOURCE_FILES = ("*.py", "*.j2", "*.rego")  # what derived output depends on


@functools.cache
def source_digest() -> str:
    """sha256 of mlspec's own source, once per process: what caches of derived output are keyed by.

    A cached render or policy result is only as good as the code that produced it; keying by the version
    number alone reused stale output whenever the code changed without a release (as in development). The
    templates and the policy library count as source: a changed template must not reuse a cached render.
    """
    package = Path(__file__).resolve().parent
    hasher = hashlib.sha256()
    for path in sorted(p for pattern in SOURCE_FILES for p in package.rglob(pattern)):
        hasher.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()
