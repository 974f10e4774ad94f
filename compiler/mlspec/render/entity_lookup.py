"""Entity-keyed inference, as rendered: which FeatureService a Deployment's server looks entity keys up in.

A Deployment reads its own ``features`` (a FeatureService) or, when it names none, its TrainingPipeline's; a
request may then carry the join keys of that service's entities instead of features
(:mod:`mlspec.serving.feature_lookup`). On the laptop the server reads the applied feature repository through
Feast's SDK; on a cluster it asks Feast's feature server, rendered beside the Feast jobs in ``gitops/feast.yaml``
(:mod:`mlspec.render.gitops_feast`).
"""

from __future__ import annotations

from typing import Any

from mlspec.render.feast import feast_name, reads_in_cluster
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.refs import SpecIndex
from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec
from mlspec.spec.entity import Entity
from mlspec.spec.features import FeatureService, FeatureView

FEATURE_SERVER = "feast-feature-server"
FEATURE_SERVER_PORT = 6566  # feast serve's default


def feature_service_of(graph: ResolvedGraph, deployment: Deployment) -> str | None:
    """The FeatureService the Deployment's model reads: its own ``features``, else its TrainingPipeline's."""
    if deployment.spec.features:
        return deployment.spec.features
    pipeline = SpecIndex(graph.resources.values()).models.get(deployment.spec.model.name)
    return pipeline.model.spec.features if pipeline is not None else None


def join_keys(graph: ResolvedGraph, service: str) -> list[str]:
    """Every join key of the entities of the service's views, sorted (as Feast orders them)."""
    found = graph.find(FeatureService, service)
    keys: set[str] = set()
    for selection in found.model.spec.features if found is not None else ():
        view = graph.find(FeatureView, selection.view)
        for entity_name in view.model.spec.entities if view is not None else ():
            entity = graph.find(Entity, entity_name)
            keys.update(entity.model.spec.join_keys if entity is not None else ())
    return sorted(keys)


def lookup_settings(graph: ResolvedGraph, deployment: Deployment, **where: str) -> dict[str, Any] | None:
    """The server's ``lookup`` section: the service's Feast name, its join keys and ``where`` (``repo=`` on the
    laptop, ``url=`` on a cluster); None when the Deployment reads no FeatureService with entities."""
    service = feature_service_of(graph, deployment)
    keys = join_keys(graph, service) if service else []
    online = deployment.spec
    if not service or not keys or not isinstance(online, OnlineDeploymentSpec):
        return None
    return {"feature_service": feast_name(service), "entities": keys, "missing": online.missing_entities, **where}


def serves_features(graph: ResolvedGraph) -> bool:
    """Whether a cluster environment runs Feast's feature server (its online store is read in the cluster)."""
    return (
        graph.env.spec.tier != "local" and graph.env.spec.targets.kubernetes is not None and reads_in_cluster(graph.env)
    )


def cluster_lookup(graph: ResolvedGraph, deployment: Deployment) -> dict[str, Any] | None:
    """The ``lookup`` section of a cluster runtime: the namespace's feature server (None when none runs)."""
    k8s = graph.env.spec.targets.kubernetes
    if k8s is None or not serves_features(graph):
        return None
    url = f"http://{FEATURE_SERVER}.{k8s.namespace}.svc:{FEATURE_SERVER_PORT}"
    return lookup_settings(graph, deployment, url=url)
