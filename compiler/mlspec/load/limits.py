"""Limits that keep hostile or broken YAML from exhausting the machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied to every file before and while it is parsed.

    ``max_alias_nodes`` caps how many nodes alias references may add once
    expanded, which is what stops a "billion laughs" file.
    """

    max_file_bytes: int = 2 * 1024 * 1024
    max_depth: int = 64
    max_alias_nodes: int = 10_000
    max_documents: int = 10_000
