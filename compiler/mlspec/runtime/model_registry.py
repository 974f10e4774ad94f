"""The model registry as the runtime reads and moves it: MLflow (on SQLite locally).

Aliases carry the lifecycle: a version that passed its gates is ``challenger``;
the version that serves is ``champion``. A canary that was rolled back is tagged
``mlspec.rollout=rolled_back`` so it is not tried again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from mlspec.crypto.keys import KeyResolver

REJECTED_TAG = "mlspec.rollout"
QUALITY_TAG = "mlspec.quality"  # set by the register step: better | worse | unchecked (runtime/registry.py)
QUALITY_DETAIL_TAG = "mlspec.quality_detail"


class RegistryError(Exception):
    """A registered version cannot be used: no ONNX file, or its bytes are not what was recorded."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version and what serving it needs."""

    name: str
    version: str
    aliases: tuple[str, ...]
    onnx_path: str
    sha256: str
    features: tuple[str, ...]
    run_id: str
    tags: dict[str, str]

    @property
    def rejected(self) -> bool:
        """A rollout of this version was rolled back."""
        return self.tags.get(REJECTED_TAG) == "rolled_back"

    @property
    def worse(self) -> str:
        """Why this version is worse than the champion it was compared with offline ("" when it is not)."""
        if self.tags.get(QUALITY_TAG) != "worse":
            return ""
        return f"worse than the champion offline ({self.tags.get(QUALITY_DETAIL_TAG, 'primary metric')})"


class Registry:
    """MLflow's model registry for one environment; failures raise ``error`` (a caller's layer may set its own)."""

    error: type[Exception] = RegistryError

    def __init__(self, tracking_uri: str) -> None:
        import logging

        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (table creation...) are noise here
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def version(self, name: str, *, alias: str | None = None, version: str | int | None = None) -> ModelVersion | None:
        """A version by alias or number; None when the model, alias or version does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            if version is not None:
                found = self.client.get_model_version(name, str(version))
            elif alias is not None:
                found = self.client.get_model_version_by_alias(name, alias)
            else:
                raise ValueError("give an alias or a version")
        except MlflowException:
            return None
        return self._describe(found)

    def _describe(self, found: Any) -> ModelVersion:
        tags = dict(found.tags or {})
        return ModelVersion(
            name=found.name,
            version=str(found.version),
            aliases=tuple(found.aliases or ()),
            onnx_path=str(self._onnx_file(found)),
            sha256=tags.get("onnx_sha256", ""),
            features=tuple(json.loads(tags.get("features", "[]"))),
            run_id=found.run_id or "",
            tags=tags,
        )

    def _onnx_file(self, found: Any) -> Path:
        tags = found.tags or {}
        if tags.get("onnx_path") and Path(tags["onnx_path"]).is_file():
            return Path(tags["onnx_path"])
        roots: list[Path] = []
        model_id = getattr(found, "model_id", None)
        source = str(found.source or "")
        if not model_id and source.startswith("models:/m-"):  # a logged model (MLflow 3)
            model_id = source.removeprefix("models:/").split("/", 1)[0]
        if model_id:
            roots.append(self._artifacts(self.client.get_logged_model(model_id).artifact_location))
        if source and not source.startswith("models:/"):
            roots.append(self._artifacts(source))
        for root in roots:
            files = sorted(root.rglob("*.onnx")) if root.is_dir() else ([root] if root.suffix == ".onnx" else [])
            if files:
                return files[0]
        raise self.error(f"model {found.name} version {found.version} has no ONNX file in the registry")

    def _artifacts(self, uri: str) -> Path:
        """A local folder (or file) with the artifacts at ``uri``: the path itself for a file:// URI, else a
        download through MLflow's artifact store (wasbs://, s3://: a pipeline step in a cluster). Whatever
        arrives is checked against the recorded sha256 before use (:meth:`verify`)."""
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(unquote(parsed.path))
        import tempfile

        from mlflow.artifacts import download_artifacts

        try:
            return Path(download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp(prefix="mlspec-model-")))
        except Exception as exc:  # the store's own error (credentials, network): one line for the step's log
            raise self.error(f"cannot download the model artifacts at {uri}: {exc}") from None

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version number an alias points at (None when unset), without resolving its files."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias."""
        self.client.delete_registered_model_alias(name, alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``."""
        self.client.set_registered_model_alias(name, alias, str(version))

    def tag(self, name: str, version: str, key: str, value: str) -> None:
        """Tag one version."""
        self.client.set_model_version_tag(name, str(version), key, value)

    def verify(self, model: ModelVersion, expected_sha256: str | None = None, keys: KeyResolver | None = None) -> str:
        """The ONNX model's sha256, after checking it against the registry tag and ``expected_sha256`` (state).

        An encrypted file (an mlspec envelope) is decrypted in memory with ``keys`` (default: file:// keys against
        $MLSPEC_PROJECT_ROOT or the working directory) and the plaintext's digest is checked: the registry and state
        record the model's sha256, not the ciphertext's. A wrong key or altered bytes refuse the version.
        """
        from mlspec.crypto import CryptoError, KeyResolver, decrypt, is_envelope

        data = Path(model.onnx_path).read_bytes()
        if is_envelope(data):
            try:
                data = decrypt(data, keys or KeyResolver())
            except CryptoError as exc:
                raise self.error(
                    f"{model.name} v{model.version}: cannot decrypt {model.onnx_path}: {exc}; refusing to serve it"
                ) from None
        actual = hashlib.sha256(data).hexdigest()
        for source, wanted in (("registry", model.sha256), ("state", expected_sha256)):
            if wanted and wanted != actual:
                raise self.error(
                    f"{model.name} v{model.version}: ONNX file sha256 {actual[:12]}… does not match "
                    f"the {source}'s {wanted[:12]}…; refusing to serve it"
                )
        return actual
