"""Which pins of the lock an image needs: the closure of its roles' requirements, not the dev tools.

The lock pins everything the test suite ran on, linters and test servers included. An image needs only what
its requirements pull in, and every wheel fetched is one more chance for an index to answer nothing. The
closure is read from the metadata of the distributions installed here (the lock was made from such an
install); when one of them is missing here, the whole lock is used, which is never wrong, only larger.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """The normalised project name (PEP 503): lower case, runs of '-', '_' and '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock_pins(lock_text: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock_text.splitlines():
        stripped = line.strip()
        match = _NAME.match(stripped)
        if match and not stripped.startswith("#"):
            pins[canonical(match.group(1))] = stripped
    return pins


def _closure(requirements: Iterable[str]) -> set[str] | None:
    """Names of the distributions ``requirements`` need here, with their extras; None when one is missing."""
    from packaging.requirements import Requirement

    needed: set[str] = set()
    pending = [Requirement(text) for text in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name, extras = canonical(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        try:
            declared = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            return None
        for text in declared:
            dependency = Requirement(text)
            marker = dependency.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in (*extras, "")):
                pending.append(dependency)
    return needed


def image_pins(lock_text: str, requirements: Iterable[str]) -> list[str]:
    """The lines of the lock that ``requirements`` need (all of them when the closure cannot be read here)."""
    pins = _lock_pins(lock_text)
    try:
        needed = _closure(requirements)
    except ImportError:  # packaging is not installed: no closure, the whole lock
        needed = None
    if needed is None:
        return sorted(pins.values())
    return sorted(pin for name, pin in pins.items() if name in needed)
