"""What a Kubeflow pipeline step needs from its cluster beyond its parameters: the Feast repository and Secrets.

A step resolves the references in its RuntimeContext (``secret://prod/artifact-store``, a ``k8s://`` tracking URI)
from ``MLSPEC_SECRET_*`` variables, and reads features through ``feature_store.yaml``, whose own placeholders
name the feature store connection's keys. On Kubeflow nothing provides those unless the compiled pipeline asks
for them, so the steps that need them get (through kfp-kubernetes, in the pipeline's platform spec):

- the ConfigMap ``mlspec-feast-repo`` (rendered into ``gitops/feast.yaml``) mounted read-only where the
  RuntimeContext's ``feature_repo`` points, and the connection Secret's keys as ``MLSPEC_SECRET_<REF>_<KEY>``;
- every other reference's Secret key as the variable the reference names.

Secret names follow docs/gitops.md: ``secret://a/b`` is the Secret ``mlspec-a-b`` (one value, key ``value``;
a feature store connection keeps one key per setting), ``k8s://name/key`` is ``name``'s ``key``.
``env://`` references name a variable of the step's own process, which no Secret provides: they are left out.
"""

from __future__ import annotations

from typing import Any

from mlspec.render.base import RenderContext
from mlspec.render.feast import FeastRenderer, connection_keys, reads_in_cluster
from mlspec.render.secret_refs import secret_name, secret_source
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.cluster import FEATURE_REPO
from mlspec.runtime.context import reference_variable, secret_variable

FEATURE_REPO_CONFIG = "mlspec-feast-repo"  # the ConfigMap gitops/feast.yaml renders


def _secret_env(ref: str | None) -> list[dict[str, str]]:
    source = secret_source(ref) if ref else None
    if ref is None or source is None:
        return []
    return [{"secret": source[0], "key": source[1], "variable": reference_variable(ref)}]


def feature_store_keys(graph: ResolvedGraph, context: RenderContext) -> list[str]:
    """The connection keys the environment's ``feature_store.yaml`` names (the Feast render is cached)."""
    rendered = FeastRenderer().render(graph, context)
    return connection_keys(
        next((a.content.decode() for a in rendered.artifacts if a.path == "feast/feature_store.yaml"), "")
    )


def step_platform(graph: ResolvedGraph, context: RenderContext) -> dict[str, Any] | None:
    """What the compiled pipelines ask of the cluster for their steps, as plain data (part of the cache key);
    None where steps run on this machine (a local environment, or no Kubeflow)."""
    env = graph.env.spec
    if env.tier == "local" or env.targets.pipelines != "kubeflow" or not reads_in_cluster(graph.env):
        return None
    registry = env.targets.registry
    store = registry.artifact_store
    connection = env.targets.feature_store.connection
    feature_secrets: list[dict[str, str]] = []
    if connection and not connection.startswith("env://"):  # one key per setting, as gitops/feast.yaml reads them
        variable = secret_variable(connection)
        feature_secrets = [
            {"secret": secret_name(connection), "key": key, "variable": f"{variable}_{key}"}
            for key in feature_store_keys(graph, context)
        ]
    return {
        "feature_repo": {"config_map": FEATURE_REPO_CONFIG, "mount_path": FEATURE_REPO},
        "feature_secrets": feature_secrets,
        "secrets": _secret_env(registry.tracking_uri) + _secret_env(store.credentials if store else None),
    }


def apply_platform(task: Any, platform: dict[str, Any] | None, *, features: bool = False, stores: bool = False) -> None:
    """Give a compiled step (a kfp PipelineTask) what it reads in the cluster, and nothing more: the Feast
    repository and connection when it reads ``features``, MLflow's and the artifact store's Secrets when it
    touches the ``stores``."""
    if platform is None:
        return
    from kfp import kubernetes

    wanted = (list(platform["secrets"]) if stores else []) + (list(platform["feature_secrets"]) if features else [])
    by_secret: dict[str, dict[str, str]] = {}
    for entry in wanted:
        by_secret.setdefault(entry["secret"], {})[entry["key"]] = entry["variable"]
    for name, keys in sorted(by_secret.items()):
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=keys)
    if features:
        repo = platform["feature_repo"]
        kubernetes.use_config_map_as_volume(task, config_map_name=repo["config_map"], mount_path=repo["mount_path"])
