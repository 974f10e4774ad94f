"""Use cases that need no project: the spec kinds' JSON Schema, durations and paths as users write and read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlspec.errors import UsageError


def spec_schema(kind: str | None = None) -> dict[str, Any]:
    """The JSON Schema of one spec kind, or of every kind together (picked by ``kind``) when ``kind`` is None."""
    from mlspec.spec.registry import ALL_KINDS
    from mlspec.spec.schema import combined_schema, kind_schema
    from mlspec.spec.suggest import did_you_mean

    if kind is None:
        return combined_schema()
    if kind not in ALL_KINDS:
        guess = did_you_mean(kind, ALL_KINDS)
        raise UsageError(
            f"unknown kind '{kind}'",
            hint=f"did you mean '{guess}'?" if guess else f"one of: {', '.join(ALL_KINDS)}",
        )
    return kind_schema(kind)


def write_spec_schemas(folder: Path) -> list[Path]:
    """Write one schema file per kind and ``mlspec.schema.json`` into ``folder``; the files written."""
    from mlspec.spec.schema import write_schemas

    return write_schemas(folder)


def duration_seconds(value: str) -> float:
    """Seconds in a number or a duration as specs write it (``30s``, ``5m``, ``1h``); ValueError otherwise."""
    try:
        return float(value)
    except ValueError:
        from mlspec.spec.base import duration_seconds as spec_duration

        return float(spec_duration(value))


def shown_path(path: Path) -> str:
    """``path`` as messages show it: relative to the working folder when inside it."""
    from mlspec.load.discovery import display_path

    return display_path(path)
