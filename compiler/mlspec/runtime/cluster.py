"""The RuntimeContext of a step that runs in a cluster: its stores are the environment's servers and object store."""

from __future__ import annotations

from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.object_store import mlflow_artifact_root

SCRATCH = "/tmp/mlspec"  # a step's scratch folder in its pod; /tmp is writable by any user
FEATURE_REPO = "/etc/mlspec/feature_repo"  # where the Feast repository's ConfigMap is mounted (read-only)


def cluster_context(
    environment: str,
    tracking_uri: str | None,
    artifact_store: str | None,
    *,
    store_credentials: str | None = None,
    kms_key: str | None = None,
    project_root: str = "/workspace",
    data_dir: str = SCRATCH,
) -> RuntimeContext:
    """The RuntimeContext a step running in the cluster gets (passed as the ``environment`` parameter): MLflow's
    artifact root in the store (wasbs:// for Azure Blob) and the store registered versions are published to.

    ``data_dir`` is the pod's scratch space (gone when the step ends; the image's non-root user can write it):
    nothing a later step or a person reads is kept there. ``kms_key`` (the Environment's encryption.kms_key)
    seals what the steps write; a ``kms://`` key needs a provider in the image (MLSPEC_KMS_PROVIDER), else the
    steps fail closed rather than write in plaintext. The Feast repository is mounted at FEATURE_REPO,
    outside it (a mount point's parents are created for root: under the scratch folder it would lock it)."""
    return RuntimeContext(
        environment=environment,
        project_root=project_root,
        data_dir=data_dir,
        feature_repo=FEATURE_REPO,
        tracking_uri=tracking_uri or "",
        artifact_root=mlflow_artifact_root(artifact_store) if artifact_store else "",
        device="auto",
        model_store=artifact_store or "",
        model_store_credentials=store_credentials or "",
        kms_key=kms_key,
    )
