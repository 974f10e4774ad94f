"""Terminal colour, on only for terminals and never with NO_COLOR set."""

from __future__ import annotations

import os
from typing import TextIO

_CODES = {"red": "31", "yellow": "33", "green": "32", "blue": "34", "cyan": "36", "bold": "1", "dim": "2"}


def use_color(stream: TextIO, mode: str = "auto") -> bool:
    """Decide whether to colour output for ``stream`` (auto | always | never)."""
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


class Style:
    """Applies ANSI styles when enabled, and nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"
