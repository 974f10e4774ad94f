"""What a caller on this machine sends to a local endpoint: an API key or a token of the local issuer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlspec.errors import UsageError
from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec

if TYPE_CHECKING:
    from mlspec.app.project import Project


def caller_headers(
    project: Project, environment: str, deployment: str, *, subject: str = "mlspec", ttl_seconds: int = 900
) -> dict[str, str]:
    """The headers that authenticate a call to an online Deployment of a local environment (empty when its
    auth is off). UsageError (exit 2) for a Deployment that does not exist or is not online."""
    from mlspec.app.operations import local_graph
    from mlspec.app.paths import local_paths
    from mlspec.spec.suggest import did_you_mean
    from mlspec.targets.local.endpoint_auth import caller_headers as headers

    graph = local_graph(project, environment)
    spec = graph.find(Deployment, deployment)
    if spec is None:
        names = [s.name for s in graph.of_kind("Deployment")]
        raise UsageError(f"no Deployment '{deployment}' in '{environment}'", hint=did_you_mean(deployment, names) or "")
    online = spec.model.spec
    if not isinstance(online, OnlineDeploymentSpec):
        raise UsageError(f"Deployment '{deployment}' is not an online endpoint (mode: {online.mode})")
    return headers(local_paths(project, graph), deployment, online.auth, subject, ttl_seconds)
