"""Local paths an environment names must stay inside the project: no ``..`` out of it, no absolute path
elsewhere, no symlink that leaves it, and only a regular file (or a folder of files) where data is read.

Object-store and warehouse locations (``az://``, ``s3://``, tables) are the way to reach data outside the
project. The messages name the path as written and where it leads, never anything read from it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from mlspec.diagnostics import Diagnostic, Location
from mlspec.load.discovery import inside
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.datasource import DataSource, FileSource

CODE = "outside-project"


def _special(path: Path) -> bool:
    """Whether an existing path is neither a regular file nor a folder (a pipe, device or socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _local(location: str) -> bool:
    return "://" not in location


def _named_paths(graph: ResolvedGraph) -> Iterator[tuple[str, str, Location, bool]]:
    """(what, path, where, is data) of every local path the environment's specs name."""
    for spec in graph.specs(DataSource):
        source = spec.model.spec
        if isinstance(source, FileSource) and _local(source.path):
            yield f"DataSource '{spec.name}' path", source.path, spec.document.locate(("spec", "path")), True
    env = graph.env
    document = graph.environment.document
    if env.spec.data_dir:
        yield f"Environment '{graph.name}' data_dir", env.spec.data_dir, document.locate(("spec", "data_dir")), False
    encryption = env.spec.encryption
    for field in ("kms_key", "signing_key"):
        ref = getattr(encryption, field, None)
        if isinstance(ref, str) and ref.startswith("file://"):
            where = document.locate(("spec", "encryption", field))
            yield f"Environment '{graph.name}' {field}", ref.removeprefix("file://"), where, False


def confinement_problems(graph: ResolvedGraph, root: Path) -> list[Diagnostic]:
    """A located error for every local path of the environment that leaves the project or is a special file."""
    problems: list[Diagnostic] = []
    for what, path, where, data in _named_paths(graph):
        target = inside(root, path)
        if target is None:
            problems.append(
                Diagnostic(
                    CODE,
                    f"{what} {path} leads outside the project ({(root / path).resolve()}); mlspec reads and writes "
                    "only inside it",
                    where,
                    hint="keep it under the project folder (a relative path without '..' or links out); data "
                    "elsewhere belongs in object storage (az://...) or a warehouse",
                )
            )
        elif data and _special(target):
            problems.append(
                Diagnostic(
                    CODE,
                    f"{what} {path} is not a regular file or folder (a pipe, device or socket)",
                    where,
                    hint="point it at a parquet file or a folder of them",
                )
            )
    return problems
