"""An MLflow tracking server through ``MlflowClient``: applies ``mlflow/registry.json`` idempotently.

Per registered model: the model exists with its description, the ``tags`` listed
(mlspec-owned ``mlspec.*`` tags no longer listed are removed, others are left
alone), and its experiment exists. Aliases point at versions only training and
promotion create, so an alias is never invented here: missing ones are reported
by ``missing_aliases`` (and by the platform's health check for served aliases).
"""

from __future__ import annotations

import json
from typing import Any

from mlspec.targets.base import TargetError
from mlspec.targets.cluster.model_pins import AliasMissing, NoVersionYet, ServedVersion

OWNED_TAG_PREFIX = "mlspec."


class MlflowServer:
    """The registry of one environment at a tracking URI."""

    def __init__(self, tracking_uri: str, client: Any = None) -> None:
        self.tracking_uri = tracking_uri
        self._client = client
        self._unreachable: str | None = None  # why the server did not answer, once it did not

    @property
    def client(self) -> Any:
        """``MlflowClient`` for tracking and registry (made on first use: importing mlflow takes seconds)."""
        if self._client is None:
            import logging

            from mlflow import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def steps(self, document: dict[str, Any]) -> list[str]:
        """What applying ``document`` would change, in words (reads the server, changes nothing)."""
        return [f"{verb} {what}" for verb, what, _ in self._actions(document)]

    def apply(self, document: dict[str, Any]) -> dict[str, str]:
        """Make the registry match ``document``; returns target ids (models, experiments)."""
        for _, _, act in self._actions(document):
            self._guard(act)
        ids = {"tracking_uri": self.tracking_uri}
        models = [str(m["name"]) for m in document.get("registered_models", [])]
        if models:
            ids["registered_models"] = ",".join(sorted(models))
        return ids

    def missing_aliases(self, document: dict[str, Any]) -> list[str]:
        """``model@alias`` served by a deployment but pointing at no version yet."""
        missing = []
        for served in document.get("deployments", []):
            if served.get("version"):
                continue
            for alias in served.get("aliases", []):
                if not self._alias_exists(str(served["model"]), str(alias)):
                    missing.append(f"{served['model']}@{alias}")
        return missing

    def served_version(self, model: str, *, alias: str | None = None, version: str | None = None) -> ServedVersion:
        """A registered version by alias or number, with its digest and store folder (see model_pins)."""
        from mlflow.exceptions import MlflowException, RestException

        wanted = f"{model} version {version}" if version is not None else f"{model}@{alias}"
        if self._unreachable is not None:  # asked once already: every lookup would wait out the same retries
            raise TargetError(f"cannot look up {wanted}: {self._unreachable}")
        try:
            if version is not None:
                found = self.client.get_model_version(model, str(version))
            else:
                found = self.client.get_model_version_by_alias(model, str(alias))
        except RestException as exc:  # the server answered: the model, alias or version does not exist
            if version is None and not self._has_versions(model):
                raise NoVersionYet(
                    f"{model} has no registered version in MLflow at {self.tracking_uri} yet: "
                    f"no pipeline run has trained it here, so @{alias} cannot be served"
                ) from None
            missing = AliasMissing if version is None else TargetError
            raise missing(
                f"MLflow at {self.tracking_uri} has no {wanted} ({exc.message}); "
                "a pipeline run registers versions and sets aliases"
            ) from None
        except MlflowException as exc:  # no answer (connection refused, timed out, TLS)
            self._unreachable = f"MLflow at {self.tracking_uri} did not answer: {exc.message}"
            raise TargetError(f"cannot look up {wanted}: {self._unreachable}") from None
        tags = dict(found.tags or {})
        return ServedVersion(
            str(found.version),
            tags.get("onnx_sha256", ""),
            tags.get("mlspec.storage_uri", ""),
            tags.get("mlspec.quality", ""),
        )

    # -- internals -----------------------------------------------------------------------------------

    def _guard(self, act: Any) -> None:
        from mlflow.exceptions import MlflowException

        try:
            act()
        except MlflowException as exc:
            raise TargetError(f"MLflow at {self.tracking_uri}: {exc.message}") from None

    def _has_versions(self, model: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return bool(self.client.search_model_versions(f"name = '{model}'", max_results=1))
        except MlflowException:
            return True  # cannot tell: treat it as an error, never as "nothing trained yet"

    def _alias_exists(self, model: str, alias: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version_by_alias(model, alias)
            return True
        except MlflowException:
            return False

    def _registered(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise TargetError(f"MLflow at {self.tracking_uri}: {exc.message}") from None

    def _actions(self, document: dict[str, Any]) -> list[tuple[str, str, Any]]:
        """(verb, what, callable) for every difference between the server and ``document``."""
        if document.get("schema_version") != 1:
            raise TargetError(f"mlflow/registry.json schema_version {document.get('schema_version')!r} is not 1")
        client = self.client
        actions: list[tuple[str, str, Any]] = []
        for model in document.get("registered_models", []):
            name = str(model["name"])
            tags = {str(k): str(v) for k, v in (model.get("tags") or {}).items()}
            description = str(model.get("description") or "")
            current = self._registered(name)
            if current is None:
                actions.append(("create registered model", name, _bind(
                    client.create_registered_model, name, tags=tags, description=description or None
                )))  # fmt: skip
            else:
                have = dict(current.tags or {})
                if (current.description or "") != description:
                    actions.append(("update description of", name, _bind(
                        client.update_registered_model, name, description=description
                    )))  # fmt: skip
                for key, value in sorted(tags.items()):
                    if have.get(key) != value:
                        actions.append(("set tag", f"{name} {key}={value}", _bind(
                            client.set_registered_model_tag, name, key, value
                        )))  # fmt: skip
                for key in sorted(set(have) - set(tags)):
                    if key.startswith(OWNED_TAG_PREFIX):
                        actions.append(("delete tag", f"{name} {key}", _bind(
                            client.delete_registered_model_tag, name, key
                        )))  # fmt: skip
            experiment = model.get("experiment")
            if experiment and client.get_experiment_by_name(str(experiment)) is None:
                exp_tags = {"mlspec.model": name, "mlspec.environment": str(document.get("environment", ""))}
                root = str(document.get("artifact_root") or "")  # the environment's store; else the server's default
                location = f"{root.rstrip('/')}/{str(experiment).replace('/', '_')}" if root else None
                actions.append(("create experiment", str(experiment), _bind(
                    client.create_experiment, str(experiment), tags=exp_tags, artifact_location=location
                )))  # fmt: skip
        return actions


def _bind(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return lambda: fn(*args, **kwargs)


def load_registry(content: bytes) -> dict[str, Any]:
    """Parse ``mlflow/registry.json``."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise TargetError(f"mlflow/registry.json is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TargetError("mlflow/registry.json is not a JSON object")
    return data
