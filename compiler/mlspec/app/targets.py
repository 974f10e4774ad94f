"""The target factory: which adapter an environment applies through."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlspec.app.paths import local_paths, output_dir, runs_engines
from mlspec.errors import MlspecError
from mlspec.plan.planner import Desired
from mlspec.resolve.graph import ResolvedGraph
from mlspec.state.model import ResourceState
from mlspec.targets.base import Target
from mlspec.targets.output_dir import OutputDirTarget

if TYPE_CHECKING:
    from mlspec.app.project import Project


def make_target(
    project: Project,
    graph: ResolvedGraph,
    desired: dict[str, Desired],
    applied: dict[str, ResourceState],
    *,
    engines: bool = True,
    direct: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> Target:
    """The target an environment applies through.

    A local tier runs the local platform. Other tiers write the output folder that
    GitOps (Argo CD) syncs; with ``direct`` they also apply to their cluster
    themselves: Kubernetes server-side apply, KFP runs and schedules, MLflow registry.
    """
    rendered = {path: a for want in desired.values() for path, a in want.artifacts.items()}
    if engines and runs_engines(graph):
        from mlspec.targets.local.platform import LocalPlatformTarget

        return LocalPlatformTarget(local_paths(project, graph), graph, rendered, applied, progress)
    if direct:
        if graph.env.spec.targets.kubernetes is None:
            raise MlspecError(
                f"'{graph.name}' has no targets.kubernetes to apply to directly",
                hint="add targets.kubernetes (namespace, context), or apply without --direct",
            )
        from mlspec.targets.cluster.platform import cluster_target

        return cluster_target(project.name, graph, output_dir(project, graph), rendered, progress)
    return OutputDirTarget(output_dir(project, graph))
