"""Content hashing: canonical JSON and digests that change exactly when the content does."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(data: Any) -> str:
    """Compact canonical JSON of plain data (sorted keys), for hashing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def digest(*parts: str) -> str:
    """sha256 of the parts, joined unambiguously."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
