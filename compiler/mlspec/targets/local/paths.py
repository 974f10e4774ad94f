"""Where the local platform keeps each engine's files, all under the environment's data folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlspec.runtime.context import RuntimeContext


@dataclass(frozen=True)
class LocalPaths:
    """The folders of one local environment."""

    environment: str
    project_root: Path
    data_dir: Path
    kms_key: str | None = None  # the Environment's encryption.kms_key: datasets and models are sealed with it
    signing_key: str | None = None  # the Environment's encryption.signing_key: edge packages are signed with it
    issuer: str | None = None  # the Environment's identity.issuer (None: the environment's own local issuer)
    jwks_uri: str | None = None  # the Environment's identity.jwks_uri

    @property
    def output(self) -> Path:
        """Rendered artifacts as applied (what a GitOps engine would watch)."""
        return self.data_dir / "output"

    @property
    def feature_repo(self) -> Path:
        """The Feast repository the local engine applies (the rendered one, with absolute store paths)."""
        return self.feast / "repo"

    @property
    def feast(self) -> Path:
        """Feast's registry and online store."""
        return self.data_dir / "feast"

    @property
    def pipelines(self) -> Path:
        """The KFP local runner's pipeline root (step outputs)."""
        return self.data_dir / "kfp"

    @property
    def serving(self) -> Path:
        """Model server configs, logs, request logs and rollout status."""
        return self.data_dir / "serving"

    @property
    def monitoring(self) -> Path:
        """Drift reports."""
        return self.data_dir / "monitoring"

    @property
    def mlflow(self) -> Path:
        """MLflow's SQLite store and artifacts."""
        return self.data_dir / "mlflow"

    def runtime_context(self) -> RuntimeContext:
        """What pipeline steps get to find these stores."""
        return RuntimeContext.local(
            self.environment, self.project_root, self.data_dir, self.feature_repo, kms_key=self.kms_key
        )
