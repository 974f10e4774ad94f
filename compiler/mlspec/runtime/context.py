"""Where a running step finds the environment's stores: passed to every pipeline step as one JSON string.

Under the KFP local runner the paths are this machine's; under Kubeflow the same
fields carry the cluster's URIs. Plain data, so it crosses process boundaries.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class RuntimeContext:
    """The environment a step runs for and the stores it reads and writes."""

    environment: str
    project_root: str  # data paths in specs and custom model entry points resolve against it
    data_dir: str  # the environment's local stores live under it
    feature_repo: str  # the rendered Feast repository (feature_store.yaml + definitions)
    tracking_uri: str  # MLflow tracking and registry store
    artifact_root: str  # MLflow artifact location for new experiments
    device: Literal["auto", "cpu"] = "auto"  # auto: a GPU when present and the spec asks for one

    def to_json(self) -> str:
        """The context as a JSON string (a pipeline parameter)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RuntimeContext:
        """Inverse of to_json."""
        return cls(**json.loads(text))

    @classmethod
    def local(cls, environment: str, project_root: Path, data_dir: Path, feature_repo: Path) -> RuntimeContext:
        """The embedded defaults: MLflow on SQLite and files under the environment's data folder."""
        mlflow_dir = data_dir / "mlflow"
        return cls(
            environment=environment,
            project_root=str(project_root),
            data_dir=str(data_dir),
            feature_repo=str(feature_repo),
            tracking_uri=f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            artifact_root=(mlflow_dir / "artifacts").as_uri(),
        )
