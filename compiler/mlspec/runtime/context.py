"""Where a running step finds the environment's stores: passed to every pipeline step as one JSON string.

Under the KFP local runner the paths are this machine's; under Kubeflow the same
fields carry the cluster's URIs. Plain data, so it crosses process boundaries.

A team environment's ``tracking_uri`` may be a reference instead of a URI
(``env://MLFLOW_TRACKING_URI``, ``secret://prod/mlflow``, ``k8s://name/key``): the
JSON carries the reference, never the secret, and :meth:`RuntimeContext.from_json`
resolves it in the step's process from its environment variables (see
:func:`resolve_reference`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mlspec.crypto.keys import KeyResolver

REFERENCE_SCHEMES = ("env://", "secret://", "k8s://")


def secret_variable(ref: str) -> str:
    """The environment variable a secret reference is provided in at run time (``secret://prod/feast`` ->
    ``MLSPEC_SECRET_PROD_FEAST``)."""
    body = ref.split("://", 1)[1]
    return "MLSPEC_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", body).strip("_").upper()


def is_reference(value: str) -> bool:
    """Whether ``value`` names a secret or variable rather than being the value itself."""
    return value.startswith(REFERENCE_SCHEMES)


def reference_variable(ref: str) -> str:
    """The variable holding a reference's value: ``env://NAME`` -> ``NAME``; secret:// and k8s:// ->
    ``MLSPEC_SECRET_<REF>``."""
    return ref.split("://", 1)[1] if ref.startswith("env://") else secret_variable(ref)


def resolve_reference(value: str, environ: Mapping[str, str] | None = None) -> str:
    """A reference's value from the environment; any other value unchanged. Raises LookupError when unset."""
    if not is_reference(value):
        return value
    variable = reference_variable(value)
    found = (os.environ if environ is None else environ).get(variable)
    if not found:
        raise LookupError(f"{value} is not provided: set the environment variable {variable}")
    return found


@dataclass(frozen=True)
class RuntimeContext:
    """The environment a step runs for and the stores it reads and writes."""

    environment: str
    project_root: str  # data paths in specs and custom model entry points resolve against it
    data_dir: str  # the environment's local stores live under it
    feature_repo: str  # the rendered Feast repository (feature_store.yaml + definitions)
    tracking_uri: str = field(repr=False)  # MLflow tracking and registry store, or a reference (env://, secret://)
    artifact_root: str  # MLflow artifact location for new experiments
    device: Literal["auto", "cpu"] = "auto"  # auto: a GPU when present and the spec asks for one
    tracking_reference: str = ""  # the reference tracking_uri was resolved from; what to_json writes back
    kms_key: str | None = None  # the Environment's encryption.kms_key: model artifacts are encrypted at rest with it
    model_store: str = ""  # the Environment's artifact_store.uri: registered versions are published under it
    model_store_credentials: str = ""  # a reference (env://, secret://, k8s://) to the store's credentials

    def key_resolver(self) -> KeyResolver | None:
        """Resolves ``kms_key`` (file:// keys against the project root; created on first use for ``local`` only);
        None when the environment has no key."""
        if not self.kms_key:
            return None
        from mlspec.crypto.keys import KeyResolver

        return KeyResolver(self.project_root, create=self.environment == "local")

    def seal(self, path: str | Path, artifact: str) -> None:
        """Encrypt a step's output file in place when the environment has a key (``artifact`` names it in the
        envelope's associated data); a no-op otherwise. Fails closed: a key that cannot be resolved raises."""
        keys = self.key_resolver()
        if keys is None or not self.kms_key:
            return
        from mlspec.crypto import encrypt_file

        encrypt_file(path, keys.resolve(self.kms_key), f"mlspec:{self.environment}/{artifact}")

    def read(self, path: str | Path) -> bytes:
        """A step input's bytes, decrypted in memory when it was sealed (plain files are returned as they are)."""
        from mlspec.crypto import read_plain

        return read_plain(path, self.key_resolver())

    def to_json(self) -> str:
        """The context as a JSON string (a pipeline parameter); a resolved tracking URI goes back to its reference."""
        data = asdict(self)
        reference = data.pop("tracking_reference")
        if reference:
            data["tracking_uri"] = reference
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RuntimeContext:
        """Inverse of to_json; a tracking_uri reference is resolved when its variable is set (else left as is)."""
        context = cls(**json.loads(text))
        try:
            return context.resolved()
        except LookupError:
            return context

    def resolved(self, environ: Mapping[str, str] | None = None) -> RuntimeContext:
        """This context with a tracking_uri reference replaced by its value (LookupError when unset)."""
        if not is_reference(self.tracking_uri):
            return self
        value = resolve_reference(self.tracking_uri, environ)
        return dataclasses.replace(self, tracking_uri=value, tracking_reference=self.tracking_uri)

    @classmethod
    def local(
        cls, environment: str, project_root: Path, data_dir: Path, feature_repo: Path, kms_key: str | None = None
    ) -> RuntimeContext:
        """The embedded defaults: MLflow on SQLite and files under the environment's data folder."""
        mlflow_dir = data_dir / "mlflow"
        return cls(
            environment=environment,
            project_root=str(project_root),
            data_dir=str(data_dir),
            feature_repo=str(feature_repo),
            tracking_uri=f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            artifact_root=(mlflow_dir / "artifacts").as_uri(),
            kms_key=kms_key,
        )


def context_parameter(environment_json: str) -> RuntimeContext:
    """The RuntimeContext a pipeline step receives as its ``environment`` parameter (JSON), or a clear error."""
    text = environment_json.strip()
    if not text.startswith("{"):
        raise ValueError(
            f"the pipeline's 'environment' parameter must be a RuntimeContext as JSON, got {environment_json!r}; "
            "pass RuntimeContext.local(...).to_json() (or the cluster's context) when starting the run"
        )
    return RuntimeContext.from_json(text)
