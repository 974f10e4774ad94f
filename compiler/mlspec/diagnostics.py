"""Diagnostics: the one data type every stage uses to report a problem in user input.

A Diagnostic is plain, frozen data. Views (terminal, JSON, SARIF later) render it;
nothing here prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


# Control characters (but tab and newline) and the bidirectional controls (U+061C, U+200E-U+200F, U+202A-U+202E,
# U+2066-U+2069): refused in spec strings and never echoed, since text reaches terminals, reports and PR comments.
HIDDEN_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A position in a source file; line and column are 1-based."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in user input.

    ``code`` is a stable kebab-case identifier (documented in docs/errors.md);
    ``path`` is the key path inside the document (``spec.rollout.steps[2]``);
    ``hint`` is the fix, when one is obvious; ``related`` points at other
    places involved (the first definition of a duplicate, say).
    """

    code: str
    message: str
    location: Location
    severity: Severity = "error"
    path: str = ""
    hint: str = ""
    related: tuple[Location, ...] = field(default=())

    def sort_key(self) -> tuple[str, int, int, str]:
        """Order diagnostics by file, then position, then code."""
        return (self.location.file, self.location.line, self.location.column, self.code)


def has_errors(diagnostics: list[Diagnostic] | tuple[Diagnostic, ...]) -> bool:
    """True when any diagnostic is an error (warnings do not fail a run)."""
    return any(d.severity == "error" for d in diagnostics)


def format_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    """Render a key path as ``spec.features[2].name``."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            out.append(f".{part}" if out else str(part))
    return "".join(out)
