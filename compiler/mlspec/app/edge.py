"""Build an edge Deployment's signed package in a local environment now (``mlspec edge build``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from mlspec.app.paths import local_paths, runs_engines
from mlspec.errors import MlspecError, UsageError

if TYPE_CHECKING:
    from mlspec.app.project import Project


class EdgeBuildFailed(MlspecError):
    """The engine could not build the package (the model failed verification, quantization or its checks)."""


def build_edge_package(
    project: Project, environment: str, deployment: str, *, progress: Callable[[str], None] = lambda _: None
) -> dict[str, str]:
    """Verify, quantize (when asked), check and sign the model an edge Deployment names; its target ids.

    The package is written under <data_dir>/edge/<deployment>/; the next apply records it
    in state. Raises EdgeBuildFailed when the engine cannot build it.
    """
    from mlspec.render.monitoring import service_features
    from mlspec.resolve.refs import SpecIndex
    from mlspec.spec.deployment import Deployment, EdgeDeploymentSpec
    from mlspec.targets.base import TargetError
    from mlspec.targets.local.edge import EdgeEngine
    from mlspec.targets.local.platform import LocalPlatform, expected_hashes

    with project.session(environment) as session:
        graph = session.graph
        if graph is None or not session.resolution.ok:
            raise MlspecError(f"environment '{environment}' does not resolve", hint="run 'mlspec check' to see why")
        if not runs_engines(graph):
            raise UsageError(
                f"'{environment}' is not a local environment: its edge packages are built by CI from "
                f"edge/{deployment}.json",
                hint="render it with 'mlspec render --env ENV --target edge'",
            )
        spec = graph.find(Deployment, deployment)
        if spec is None:
            names = [s.name for s in graph.of_kind("Deployment")]
            raise UsageError(
                f"no Deployment '{deployment}' in '{environment}'", hint=f"one of: {', '.join(names) or 'none'}"
            )
        if not isinstance(spec.model.spec, EdgeDeploymentSpec):
            raise UsageError(f"Deployment '{deployment}' is mode: {spec.model.spec.mode}, not edge")
        pipeline = SpecIndex(graph.resources.values()).models.get(spec.model.spec.model.name)
        trainer = pipeline.model if pipeline is not None else None
        service = spec.model.spec.features or (trainer.spec.features if trainer else None)
        features = (
            [{"name": f["name"], "dtype": f["dtype"]} for f in service_features(graph, service)] if service else None
        )
        paths = local_paths(project, graph)
        if not (paths.mlflow / "mlflow.db").is_file():
            raise MlspecError(
                f"nothing is registered in '{environment}' yet", hint=f"run 'mlspec apply --env {environment}' first"
            )
        applied = session.store.read(environment).resources
    expected = expected_hashes(applied).get(spec.model.spec.model.name, {})
    engine = EdgeEngine(paths, LocalPlatform(paths).registry)
    try:
        return engine.build(spec.model, trainer, expected, features=features or None, progress=progress)
    except TargetError as exc:
        raise EdgeBuildFailed(str(exc)) from None
