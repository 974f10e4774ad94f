"""Feature store engine: writes the rendered Feast repository, applies it and materializes the online store.

Applying is keyed by the repository's content: the same files applied twice run
Feast once. The marker is written only after Feast succeeded, so a crash in
between re-applies next time (Feast's apply is idempotent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.hashing import digest
from mlspec.render.base import Artifact
from mlspec.targets.base import TargetError
from mlspec.targets.local.paths import LocalPaths

FEAST_PREFIX = "feast/"
APPLY_TIMEOUT_S = 600


class FeatureStoreEngine:
    """Feast on SQLite (online, registry) and parquet (offline) under the environment's data folder."""

    def __init__(self, paths: LocalPaths) -> None:
        self.paths = paths
        self.marker = paths.feast / "applied.json"

    @staticmethod
    def repo_files(artifacts: dict[str, Artifact]) -> dict[str, Artifact]:
        """The Feast repository among rendered artifacts."""
        return {p: a for p, a in artifacts.items() if p.startswith(FEAST_PREFIX)}

    def applied(self) -> dict[str, Any] | None:
        """What was last applied (content digest, views, materialized window), or None."""
        try:
            data: dict[str, Any] = json.loads(self.marker.read_text())
            return data
        except (OSError, ValueError):
            return None

    def ensure(self, files: dict[str, Artifact], progress: Any = None) -> bool:
        """Apply the repository made of ``files`` unless exactly it is applied already; True when Feast ran."""
        if not files:
            return False
        content = digest(*(f"{p}:{a.sha256}" for p, a in sorted(files.items())))
        current = self.applied()
        if current and current.get("digest") == content and self._stores_exist():
            return False
        for relative, artifact in files.items():
            content_bytes = artifact.content
            if relative == f"{FEAST_PREFIX}feature_store.yaml":
                content_bytes = self._localize(content_bytes)
            path = self.paths.feature_repo / relative.removeprefix(FEAST_PREFIX)
            if not (path.is_file() and path.read_bytes() == content_bytes):
                atomic_write(path, content_bytes)
        if progress:
            progress("feast apply + materialize")
        started = time.monotonic()
        result = self._run_feast()
        result.update(digest=content, seconds=round(time.monotonic() - started, 2))
        atomic_write(self.marker, json.dumps(result, indent=2, sort_keys=True).encode())
        return True

    def _localize(self, config: bytes) -> bytes:
        """The rendered config with its local stores at absolute paths under the data folder.

        The rendered repository locates its SQLite files relative to ``rendered/<env>/feast``;
        the engine's copy lives elsewhere, so relative paths would point at the wrong place.
        """
        import yaml

        data = yaml.safe_load(config)
        registry = data.get("registry")
        if isinstance(registry, dict) and registry.get("registry_type") == "file":
            registry["path"] = str(self.paths.feast / "registry.db")
        online = data.get("online_store")
        if isinstance(online, dict) and online.get("type") == "sqlite":
            online["path"] = str(self.paths.feast / "online_store.db")
        return yaml.safe_dump(data, sort_keys=False).encode()

    def is_applied(self) -> bool:
        """A repository was applied and its registry and online store are still there."""
        return self.applied() is not None and self._stores_exist()

    def _stores_exist(self) -> bool:
        return (self.paths.feast / "registry.db").is_file() and (self.paths.feast / "online_store.db").is_file()

    def _run_feast(self) -> dict[str, Any]:
        env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(self.paths.project_root)}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "mlspec.runtime.feature_store", str(self.paths.feature_repo)],
                capture_output=True, text=True, env=env, timeout=APPLY_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise TargetError(f"feast apply did not finish in {APPLY_TIMEOUT_S} s") from None
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        if done.returncode != 0 or "error" in result or not result:
            detail = result.get("error") or done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise TargetError(f"feast apply failed in {self.paths.feature_repo}: {detail}")
        return result

    def online_features(self, service: str, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Look features up online through a feature service (what a caller does before calling the model)."""
        os.environ.setdefault("MLSPEC_PROJECT_ROOT", str(self.paths.project_root))
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(self.paths.feature_repo))
        feature_service = store.get_feature_service(service.replace("-", "_"))
        result: dict[str, list[Any]] = store.get_online_features(
            features=feature_service, entity_rows=entity_rows
        ).to_dict()
        return result
