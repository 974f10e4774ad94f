"""The container images cluster workloads run (a minimal stand-in: the images work replaces this module)."""

from __future__ import annotations

from typing import Literal

from mlspec.resolve.graph import ResolvedGraph

DEFAULT_IMAGE = "python:3.11-slim"


def image_reference(graph: ResolvedGraph, role: Literal["runtime", "serving"]) -> str:
    """The image a ``runtime`` (pipeline steps, jobs) or ``serving`` workload of ``graph``'s environment runs."""
    del graph, role  # every workload runs the documented default until images are built and pinned
    return DEFAULT_IMAGE
