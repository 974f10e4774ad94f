"""The RuntimeContext of a step that runs in a cluster: its stores are the environment's servers and object store."""

from __future__ import annotations

from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.object_store import mlflow_artifact_root


def cluster_context(
    environment: str,
    tracking_uri: str | None,
    artifact_store: str | None,
    *,
    store_credentials: str | None = None,
    project_root: str = "/workspace",
    data_dir: str = "/data",
) -> RuntimeContext:
    """The RuntimeContext a step running in the cluster gets (passed as the ``environment`` parameter): MLflow's
    artifact root in the store (wasbs:// for Azure Blob) and the store registered versions are published to."""
    return RuntimeContext(
        environment=environment,
        project_root=project_root,
        data_dir=data_dir,
        feature_repo=f"{data_dir}/feature_repo",
        tracking_uri=tracking_uri or "",
        artifact_root=mlflow_artifact_root(artifact_store) if artifact_store else "",
        device="auto",
        model_store=artifact_store or "",
        model_store_credentials=store_credentials or "",
    )
