"""The register step: one MLflow run per training, a model version when the gates pass, aliases.

Choices:
- A model that fails a gate is logged (params, metrics, the failures, its ONNX
  model and evaluation) but **no model version is registered**: the registry only
  holds versions that may be served; the failed run stays inspectable.
- Champion comparison uses the primary metric (the search metric, else the first
  evaluation metric; higher is better except logloss, rmse, mae), read from the
  champion version's run. A tie does not take the champion alias.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import onnx
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from mlspec.crypto import KeyEncryptionKey, encrypt, encrypt_file, read_plain
from mlspec.runtime import explain
from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.dataset import read_dataset
from mlspec.runtime.metrics import higher_is_better
from mlspec.runtime.model_registry import QUALITY_DETAIL_TAG, QUALITY_TAG
from mlspec.runtime.object_store import PublishedVersion, open_store, publish_model_version

REFERENCE_DATA = "reference/reference_data.parquet"
ONNX = "model/model.onnx"


def ort_version() -> str:
    """The installed onnxruntime's version."""
    from importlib.metadata import version

    return version("onnxruntime")


def experiment_name(ctx: RuntimeContext, pipeline: str, model_name: str) -> str:
    """The experiment the mlflow renderer declared for this model, else ``<environment>/<pipeline>``."""
    declared = Path(ctx.feature_repo).parent / "mlflow" / "registry.json"
    if declared.is_file():
        try:
            for model in json.loads(declared.read_text()).get("registered_models", []):
                if model.get("name") == model_name and model.get("experiment"):
                    return str(model["experiment"])
        except (OSError, ValueError):
            pass
    return f"{ctx.environment}/{pipeline}"


def _experiment(client: MlflowClient, ctx: RuntimeContext, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = ctx.artifact_root.rstrip("/") + "/" + name.replace("/", "_")
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created concurrently
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


class EncryptedOnnxFlavor:
    """mlflow.onnx, except that the saved ``model.onnx`` is encrypted before MLflow uploads the model folder:
    the artifact store only ever receives ciphertext (the MLmodel, signature and requirements stay readable)."""

    def __init__(self, kek: KeyEncryptionKey, identity: str) -> None:
        self.__name__ = "mlflow.onnx"
        self.kek = kek
        self.identity = identity

    def save_model(self, path: str, **kwargs: Any) -> None:
        """mlflow.onnx.save_model, then ``model.onnx`` encrypted in place (in MLflow's local staging folder)."""
        mlflow.onnx.save_model(path=path, **kwargs)
        encrypt_file(Path(path) / "model.onnx", self.kek, self.identity)


def artifact_identity(ctx: RuntimeContext, model_name: str, run_id: str, artifact: str) -> str:
    """The associated data an artifact is encrypted for: environment, model, run and artifact path."""
    return f"mlspec:{ctx.environment}/{model_name}/runs/{run_id}/{artifact}"


def _log_artifact(path: str, folder: str, kek: KeyEncryptionKey | None, identity: str) -> None:
    """Log ``path`` under ``folder``, as an envelope (same file name) when the environment has a key."""
    if kek is None:
        mlflow.log_artifact(path, folder)
        return
    with tempfile.TemporaryDirectory() as tmp:
        sealed = Path(tmp) / Path(path).name
        encrypt_file(path, kek, identity, out=sealed)
        mlflow.log_artifact(str(sealed), folder)


def local_path(uri: str) -> str:
    """A file:// URI (or plain path) as a local path."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _champion(client: MlflowClient, model_name: str, alias: str, metric: str) -> dict[str, Any] | None:
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    value = client.get_run(version.run_id).data.metrics.get(metric) if version.run_id else None
    return {"version": str(version.version), "metric": metric, "value": value}


def quality_tags(
    compare_to: str, metric: str, value: float | None, champion: dict[str, Any] | None, beats: bool
) -> dict[str, str]:
    """The tags that say how a new version compared with the champion on the primary metric (offline)."""
    if compare_to == "none":
        return {QUALITY_TAG: "unchecked", QUALITY_DETAIL_TAG: "evaluation.compare_to: none"}
    shown = f"{metric} {value:.4f}" if value is not None else f"{metric} unknown"
    if champion is None or champion["value"] is None:
        return {QUALITY_TAG: "better", QUALITY_DETAIL_TAG: f"{shown}; no champion to compare with"}
    versus = f"{shown} vs champion v{champion['version']} {champion['value']:.4f}"
    return {QUALITY_TAG: "better" if beats else "worse", QUALITY_DETAIL_TAG: versus}


def _beats(metric: str, value: float | None, champion: dict[str, Any] | None) -> bool:
    if value is None:
        return False
    if champion is None or champion["value"] is None or not math.isfinite(champion["value"]):
        return True
    return bool(value > champion["value"] if higher_is_better(metric) else value < champion["value"])


@dataclass(frozen=True)
class TrainedModel:
    """What the train, export and evaluate steps left for registration, read once (decrypted in memory)."""

    checkpoint: bytes  # the train step's torch file, plain
    saved: dict[str, Any]  # its contents: features, device, params, best_params, trials, search_metric
    onnx_bytes: bytes
    sha256: str
    evaluation: dict[str, Any]
    kek: KeyEncryptionKey | None  # the environment's key: artifacts are sealed with it

    @property
    def features(self) -> list[str]:
        """The model's input features, in order."""
        return list(self.saved["features"])

    @property
    def device(self) -> str:
        """Where it was trained."""
        return str(self.saved["device"])

    @property
    def metrics(self) -> dict[str, float]:
        """The evaluation's metrics."""
        return dict(self.evaluation["metrics"])


@dataclass(frozen=True)
class LoggedRun:
    """The MLflow run registration logged: its id, the logged model and where its artifacts are."""

    run_id: str
    experiment_id: str
    model_info: Any  # mlflow.models.model.ModelInfo
    artifact_uri: str
    explanation: explain.Explanation


@dataclass(frozen=True)
class Registration:
    """The model version registered (None when a gate failed) and how it compares with the champion."""

    version: str | None = None
    champion: dict[str, Any] | None = None
    beats: bool = False
    promoted: bool = False
    storage_uri: str | None = None  # the version's folder in the environment's object store, as KServe reads it


def read_trained_model(ctx: RuntimeContext, model_path: str, evaluation_path: str, onnx_path: str) -> TrainedModel:
    """The training's outputs (envelopes opened with the environment's key; no key, no run)."""
    import torch  # only for the saved training metadata (params, trials, device)

    evaluation = json.loads(Path(evaluation_path).read_text())
    checkpoint = ctx.read(model_path)  # the train step's file is an envelope when the environment has a key
    saved = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=False)
    keys = ctx.key_resolver()
    kek = keys.resolve(ctx.kms_key) if keys is not None and ctx.kms_key else None  # fails closed: no key, no run
    onnx_bytes = read_plain(onnx_path, keys)  # the export step's file is an envelope when the environment has a key
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    return TrainedModel(checkpoint, saved, onnx_bytes, sha, evaluation, kek)


def run_tags(spec: dict[str, Any], ctx: RuntimeContext, trained: TrainedModel) -> dict[str, str]:
    """The run's tags: the spec's, where it ran, the gates' outcome, the model's digest and key."""
    evaluation = trained.evaluation
    tags = {
        **spec["spec"].get("register", {}).get("tags", {}),
        "mlspec.environment": ctx.environment,
        "mlspec.pipeline": spec["metadata"]["name"],
        "mlspec.device": trained.device,
        "mlspec.gates_passed": str(bool(evaluation["gates_passed"])).lower(),
        "mlspec.onnx_sha256": trained.sha256,
    }
    if trained.kek is not None:
        tags |= {"mlspec.encryption.key_ref": trained.kek.ref, "mlspec.encryption.key_id": trained.kek.key_id}
    failures = [g["message"] for g in evaluation["gates"] if not g["passed"]]
    if failures:
        tags["mlspec.gate_failures"] = "; ".join(failures)[:5000]
    return tags


def run_params(trained: TrainedModel) -> dict[str, Any]:
    """The run's params: the training's, the search's best, the features and the split sizes."""
    saved, evaluation = trained.saved, trained.evaluation
    params: dict[str, Any] = {k: v for k, v in saved["params"].items() if v is not None}
    params |= {f"best.{k}": v for k, v in saved["best_params"].items()}
    params |= {"features": json.dumps(trained.features), "train_rows": evaluation["train_rows"]}
    params["test_rows"] = evaluation["test_rows"]
    return params


def _log_trials(experiment_id: str, saved: dict[str, Any]) -> None:
    """One nested run per search trial."""
    for trial in saved["trials"]:
        with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name=f"trial-{trial['number']}"):
            mlflow.set_tags({"mlspec.trial": str(trial["number"]), "mlspec.trial_state": trial["state"]})
            mlflow.log_params(trial["params"])
            if trial["value"] is not None and math.isfinite(trial["value"]):
                mlflow.log_metric(f"validation_{saved['search_metric']}", trial["value"])


def _log_onnx_model(trained: TrainedModel, identity: str) -> Any:
    """Log the ONNX model (its file sealed when the environment has a key); returns MLflow's ModelInfo."""
    n_features = len(trained.features)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, n_features), "input")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1,), "score")]),
    )
    flavor = mlflow.onnx if trained.kek is None else EncryptedOnnxFlavor(trained.kek, identity)
    return Model.log(
        artifact_path=None,
        flavor=flavor,
        onnx_model=onnx.load_from_string(trained.onnx_bytes),
        name="model",
        signature=signature,
        save_as_external_data=False,
        onnx_execution_providers=["CPUExecutionProvider"],
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort_version()}"],  # no slow inference
    )


def log_run(  # noqa: PLR0917
    spec: dict[str, Any],
    ctx: RuntimeContext,
    client: MlflowClient,
    trained: TrainedModel,
    model_name: str,
    dataset_path: str,
    model_path: str,
) -> LoggedRun:
    """One MLflow run: params, metrics, trials, reference data, evaluation, explanation, torch and ONNX models."""
    experiment_id = _experiment(client, ctx, experiment_name(ctx, spec["metadata"]["name"], model_name))
    kek, evaluation = trained.kek, trained.evaluation
    frame, _, _ = read_dataset(dataset_path, ctx)
    reference = frame.iloc[: evaluation["train_rows"]][trained.features]
    with mlflow.start_run(experiment_id=experiment_id, tags=run_tags(spec, ctx, trained)) as run:
        run_id = run.info.run_id

        def identity(artifact: str) -> str:
            return artifact_identity(ctx, model_name, run_id, artifact)

        mlflow.log_params(run_params(trained))
        mlflow.log_metrics({k: v for k, v in trained.metrics.items() if v is not None and math.isfinite(v)})
        _log_trials(experiment_id, trained.saved)
        with tempfile.TemporaryDirectory() as tmp:
            reference_file = Path(tmp) / "reference_data.parquet"
            reference.to_parquet(reference_file, index=False)
            _log_artifact(str(reference_file), "reference", kek, identity(REFERENCE_DATA))
        mlflow.log_dict(evaluation, "evaluation/evaluation.json")
        explanation = explain.log_report(spec, ctx, model_path=model_path, dataset_path=dataset_path)
        with tempfile.TemporaryDirectory() as tmp:  # re-sealed for this run (the step's envelope names the step)
            plain = Path(tmp) / Path(model_path).name
            plain.write_bytes(trained.checkpoint)
            _log_artifact(str(plain), "torch", kek, identity("torch/" + plain.name))
        info = _log_onnx_model(trained, identity(ONNX))
        artifact_uri = str(run.info.artifact_uri)
    return LoggedRun(run_id, experiment_id, info, artifact_uri, explanation)


def publish_to_store(
    ctx: RuntimeContext, trained: TrainedModel, model_name: str, version: str, run_id: str
) -> PublishedVersion | None:
    """Write the registered version to the environment's object store (sealed with its key when it has one), in
    the immutable layout of :mod:`mlspec.runtime.object_store`; None when the environment names no store."""
    if not ctx.model_store:
        return None
    kek = trained.kek
    data, sealed = trained.onnx_bytes, None
    if kek is not None:
        identity = f"mlspec:{ctx.environment}/{model_name}/versions/{version}/model.onnx"
        data = encrypt(trained.onnx_bytes, kek, identity)
        sealed = {"key_ref": kek.ref, "key_id": kek.key_id, "identity": identity}
    store = open_store(ctx.model_store, ctx.model_store_credentials or None)
    return publish_model_version(
        store, ctx.model_store, model=model_name, version=version, model_bytes=data, sha256=trained.sha256,
        sealed=sealed, run_id=run_id, environment=ctx.environment, features=trained.features,
    )  # fmt: skip


def register_version(  # noqa: PLR0917
    spec: dict[str, Any],
    ctx: RuntimeContext,
    client: MlflowClient,
    trained: TrainedModel,
    run: LoggedRun,
    model_name: str,
    alias: str,
    promote_directly: bool,
) -> Registration:
    """Register the run's model when every gate passed, alias it, and promote it when it beats the champion."""
    if not trained.evaluation["gates_passed"]:
        return Registration()
    body = spec["spec"]
    registration = body.get("register", {})
    promote_to = registration.get("promote_to", "champion")
    compare_to = body.get("evaluation", {}).get("compare_to", "champion")
    primary = trained.evaluation["primary_metric"]
    kek = trained.kek
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(model_name, tags=registration.get("tags", {}))
    champion = _champion(client, model_name, promote_to, primary) if promote_to and compare_to == "champion" else None
    created = client.create_model_version(model_name, run.model_info.model_uri, run_id=run.run_id, tags={
        "onnx_sha256": trained.sha256,
        "features": json.dumps(trained.features),
        "device": trained.device,
        "mlspec.environment": ctx.environment,
        **({"encryption_key_ref": kek.ref, "encryption_key_id": kek.key_id} if kek is not None else {}),
    })  # fmt: skip
    version = str(created.version)
    published = publish_to_store(ctx, trained, model_name, version, run.run_id)
    stored = published.storage_uri if published is not None else None
    if stored is not None:  # where servers fetch this exact version (KServe's storageUri)
        client.set_model_version_tag(model_name, version, "mlspec.storage_uri", stored)
    client.set_registered_model_alias(model_name, alias, version)
    explained = explain.check_version(client, model_name, version, run.run_id, run.explanation, promote_to)
    if not promote_to:
        return Registration(version, champion, storage_uri=stored)
    value = _finite(trained.metrics.get(primary))
    beats = compare_to == "none" or _beats(primary, value, champion)
    # what a canary or blue-green rollout of this version must respect: a worse challenger is never rolled out
    for tag, text in quality_tags(compare_to, primary, value, champion, beats).items():
        client.set_model_version_tag(model_name, version, tag, text)
    promoted = beats and promote_directly and explained
    if promoted:
        client.set_registered_model_alias(model_name, promote_to, version)
    return Registration(version, champion, beats, promoted, stored)


def register(
    spec: dict[str, Any],
    ctx: RuntimeContext,
    *,
    model_name: str,
    alias: str,
    promote_directly: bool,
    dataset_path: str,
    model_path: str,
    evaluation_path: str,
    onnx_path: str,
) -> dict[str, Any]:
    """Log, register and alias; returns the summary (see the module docstring for the rules)."""
    trained = read_trained_model(ctx, model_path, evaluation_path, onnx_path)
    mlflow.set_tracking_uri(ctx.tracking_uri)
    mlflow.set_registry_uri(ctx.tracking_uri)
    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    run = log_run(spec, ctx, client, trained, model_name, dataset_path, model_path)
    registered = register_version(spec, ctx, client, trained, run, model_name, alias, promote_directly)
    model_dir = Path(local_path(client.get_logged_model(run.model_info.model_id).artifact_location))
    evaluation, saved = trained.evaluation, trained.saved
    return {
        "model_name": model_name,
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "version": registered.version,
        "storage_uri": registered.storage_uri,
        "alias": alias if registered.version else None,
        "onnx_sha256": trained.sha256,
        "onnx_path": str(model_dir / "model.onnx"),
        "features": trained.features,
        "device": trained.device,
        "metrics": {k: _finite(v) for k, v in trained.metrics.items()},
        "primary_metric": evaluation["primary_metric"],
        "gates": evaluation["gates"],
        "gates_passed": bool(evaluation["gates_passed"]),
        "champion": registered.champion,
        "beats_champion": registered.beats,
        "promoted": registered.promoted,
        "promote_to": spec["spec"].get("register", {}).get("promote_to", "champion"),
        "reference_data": str(Path(local_path(run.artifact_uri)) / REFERENCE_DATA),
        "search": {"best_params": saved["best_params"], "trials": len(saved["trials"])},
        "explainability": run.explanation.as_dict(),
    }
