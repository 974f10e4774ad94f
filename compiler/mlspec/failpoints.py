"""Failpoints: crash on purpose at a named step, to prove recovery (tests only set them).

``MLSPEC_FAILPOINTS="apply.after_target=3"`` kills the process with SIGKILL the third
time the reconciler passes ``apply.after_target``. Unset, this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here if the environment asks for it."""
    spec = os.environ.get("MLSPEC_FAILPOINTS")
    if not spec:
        return
    for item in spec.split(","):
        point, _, at = item.partition("=")
        if point.strip() == name:
            _counts[name] = _counts.get(name, 0) + 1
            if _counts[name] == int(at or 1):
                os.kill(os.getpid(), signal.SIGKILL)
