"""Diagnostics for people: ``file:line:col: error[code]: message`` with the source line."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from mlspec.diagnostics import HIDDEN_CHARACTERS, Diagnostic
from mlspec.views.style import Style


class SourceCache:
    """Reads source lines once per file for excerpts."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str] | None] = {}

    def line(self, file: str, number: int) -> str | None:
        """Line ``number`` (1-based) of ``file``, or None when unavailable."""
        if file not in self._lines:
            self._lines[file] = _read_lines(Path(file))
        lines = self._lines[file]
        if lines is None or not 0 < number <= len(lines):
            return None
        return lines[number - 1]


EXCERPT_BYTES = 4 * 1024 * 1024
# The loader refused these files unread: their bytes are never shown (a pipe would block, a link may lead out).
UNREAD = frozenset({"outside-project", "unreadable-file", "file-too-large"})


def _read_lines(path: Path) -> list[str] | None:
    """The first EXCERPT_BYTES of a regular file, as lines; None for anything else (a pipe, a device)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            return handle.read(EXCERPT_BYTES).decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None


def render_diagnostic(d: Diagnostic, style: Style, sources: SourceCache | None = None) -> str:
    """One diagnostic: the header line, then the source excerpt and help, indented."""
    colour = "red" if d.severity == "error" else "yellow"
    header = f"{style(str(d.location), 'bold')}: {style(f'{d.severity}[{d.code}]', colour, 'bold')}: {d.message}"
    lines = [header]
    wanted = sources is not None and d.location.line > 0 and d.code not in UNREAD
    source = sources.line(d.location.file, d.location.line) if sources is not None and wanted else None
    if source is not None and "\x00" not in source:
        shown = HIDDEN_CHARACTERS.sub("\ufffd", source.expandtabs(1))  # one column each: the caret stays put
        if len(shown) > 160:
            start = max(0, d.location.column - 80)
            shown = shown[start : start + 160]
            caret_at = d.location.column - start
        else:
            caret_at = d.location.column
        gutter = f"{d.location.line:>5} | "
        lines.append(style(gutter, "blue") + shown)
        lines.append(style(" " * (len(gutter) - 2) + "| ", "blue") + " " * max(caret_at - 1, 0) + style("^", colour))
    if d.hint:
        lines.append(f"      {style('= help:', 'cyan')} {d.hint}")
    for related in d.related:
        lines.append(f"      {style('= note:', 'cyan')} see {related}")
    return "\n".join(lines)


MAX_SHOWN = 200  # a terminal is no place for 20,000 errors: the first ones, then how many more


def render_diagnostics(
    diagnostics: Iterable[Diagnostic], style: Style, *, excerpts: bool = True, limit: int = MAX_SHOWN
) -> str:
    """The diagnostics (the first ``limit``, then "and N more"), separated by blank lines when excerpts are
    shown."""
    sources = SourceCache() if excerpts else None
    every = list(diagnostics)
    blocks = [render_diagnostic(d, style, sources) for d in every[:limit]]
    if len(every) > limit:
        blocks.append(f"... and {len(every) - limit} more (--format json lists them all)")
    return ("\n\n" if excerpts else "\n").join(blocks)


def render_compact(diagnostics: Iterable[Diagnostic]) -> str:
    """One line per diagnostic, for grep and editors' problem matchers."""
    out = []
    for d in diagnostics:
        line = f"{d.location}: {d.severity}[{d.code}]: {d.message}"
        if d.hint:
            line += f" ({d.hint})"
        out.append(line)
    return "\n".join(out)
