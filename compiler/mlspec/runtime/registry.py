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

from mlspec.crypto import KeyEncryptionKey, encrypt_file, read_plain
from mlspec.runtime import explain
from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.dataset import read_dataset
from mlspec.runtime.metrics import higher_is_better

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


def _beats(metric: str, value: float | None, champion: dict[str, Any] | None) -> bool:
    if value is None:
        return False
    if champion is None or champion["value"] is None or not math.isfinite(champion["value"]):
        return True
    return bool(value > champion["value"] if higher_is_better(metric) else value < champion["value"])


def register(  # noqa: PLR0915
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
    import torch  # only for the saved training metadata (params, trials, device)

    body = spec["spec"]
    registration = body.get("register", {})
    evaluation = json.loads(Path(evaluation_path).read_text())
    checkpoint = ctx.read(model_path)  # the train step's file is an envelope when the environment has a key
    saved = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=False)
    features: list[str] = saved["features"]
    device: str = saved["device"]
    keys = ctx.key_resolver()
    kek = keys.resolve(ctx.kms_key) if keys is not None and ctx.kms_key else None  # fails closed: no key, no run
    onnx_bytes = read_plain(onnx_path, keys)  # the export step's file is an envelope when the environment has a key
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    metrics: dict[str, float] = evaluation["metrics"]
    gates_passed = bool(evaluation["gates_passed"])
    primary = evaluation["primary_metric"]

    mlflow.set_tracking_uri(ctx.tracking_uri)
    mlflow.set_registry_uri(ctx.tracking_uri)
    client = MlflowClient(ctx.tracking_uri, ctx.tracking_uri)
    experiment_id = _experiment(client, ctx, experiment_name(ctx, spec["metadata"]["name"], model_name))
    tags = {
        **registration.get("tags", {}),
        "mlspec.environment": ctx.environment,
        "mlspec.pipeline": spec["metadata"]["name"],
        "mlspec.device": device,
        "mlspec.gates_passed": str(gates_passed).lower(),
        "mlspec.onnx_sha256": sha,
    }
    if kek is not None:
        tags |= {"mlspec.encryption.key_ref": kek.ref, "mlspec.encryption.key_id": kek.key_id}
    failures = [g["message"] for g in evaluation["gates"] if not g["passed"]]
    if failures:
        tags["mlspec.gate_failures"] = "; ".join(failures)[:5000]
    params: dict[str, Any] = {k: v for k, v in saved["params"].items() if v is not None}
    params |= {f"best.{k}": v for k, v in saved["best_params"].items()}
    params |= {"features": json.dumps(features), "train_rows": evaluation["train_rows"]}
    params["test_rows"] = evaluation["test_rows"]

    frame, _, _ = read_dataset(dataset_path, ctx)
    reference = frame.iloc[: evaluation["train_rows"]][features]
    proto = onnx.load_from_string(onnx_bytes)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, len(features)), "input")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1,), "score")]),
    )
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        run_id = run.info.run_id

        def identity(artifact: str) -> str:
            return artifact_identity(ctx, model_name, run_id, artifact)

        mlflow.log_params(params)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None and math.isfinite(v)})
        for trial in saved["trials"]:
            with mlflow.start_run(experiment_id=experiment_id, nested=True, run_name=f"trial-{trial['number']}"):
                mlflow.set_tags({"mlspec.trial": str(trial["number"]), "mlspec.trial_state": trial["state"]})
                mlflow.log_params(trial["params"])
                if trial["value"] is not None and math.isfinite(trial["value"]):
                    mlflow.log_metric(f"validation_{saved['search_metric']}", trial["value"])
        with tempfile.TemporaryDirectory() as tmp:
            reference_file = Path(tmp) / "reference_data.parquet"
            reference.to_parquet(reference_file, index=False)
            _log_artifact(str(reference_file), "reference", kek, identity(REFERENCE_DATA))
        mlflow.log_dict(evaluation, "evaluation/evaluation.json")
        explanation = explain.log_report(spec, ctx, model_path=model_path, dataset_path=dataset_path)
        with tempfile.TemporaryDirectory() as tmp:  # re-sealed for this run (the step's envelope names the step)
            plain = Path(tmp) / Path(model_path).name
            plain.write_bytes(checkpoint)
            _log_artifact(str(plain), "torch", kek, identity("torch/" + plain.name))
        flavor = mlflow.onnx if kek is None else EncryptedOnnxFlavor(kek, identity(ONNX))
        info = Model.log(
            artifact_path=None,
            flavor=flavor,
            onnx_model=proto,
            name="model",
            signature=signature,
            save_as_external_data=False,
            onnx_execution_providers=["CPUExecutionProvider"],
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort_version()}"],  # no slow inference
        )
        artifact_uri = run.info.artifact_uri
    reference_path = str(Path(local_path(str(artifact_uri))) / REFERENCE_DATA)
    model_dir = Path(local_path(client.get_logged_model(info.model_id).artifact_location))
    registered_onnx = str(model_dir / "model.onnx")

    version: str | None = None
    champion: dict[str, Any] | None = None
    beats = False
    promoted = False
    promote_to = registration.get("promote_to", "champion")
    if gates_passed:
        with contextlib.suppress(MlflowException):  # already registered
            client.create_registered_model(model_name, tags=registration.get("tags", {}))
        if promote_to and body.get("evaluation", {}).get("compare_to", "champion") == "champion":
            champion = _champion(client, model_name, promote_to, primary)
        created = client.create_model_version(model_name, info.model_uri, run_id=run_id, tags={
            "onnx_sha256": sha,
            "features": json.dumps(features),
            "device": device,
            "mlspec.environment": ctx.environment,
            **({"encryption_key_ref": kek.ref, "encryption_key_id": kek.key_id} if kek is not None else {}),
        })  # fmt: skip
        version = str(created.version)
        client.set_registered_model_alias(model_name, alias, version)
        explained = explain.check_version(client, model_name, version, run_id, explanation, promote_to)
        if promote_to:
            if body.get("evaluation", {}).get("compare_to", "champion") == "none":
                beats = True
            else:
                beats = _beats(primary, _finite(metrics.get(primary)), champion)
            if beats and promote_directly and explained:
                client.set_registered_model_alias(model_name, promote_to, version)
                promoted = True
    return {
        "model_name": model_name,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "version": version,
        "alias": alias if version else None,
        "onnx_sha256": sha,
        "onnx_path": registered_onnx,
        "features": features,
        "device": device,
        "metrics": {k: _finite(v) for k, v in metrics.items()},
        "primary_metric": primary,
        "gates": evaluation["gates"],
        "gates_passed": gates_passed,
        "champion": champion,
        "beats_champion": beats,
        "promoted": promoted,
        "promote_to": promote_to,
        "reference_data": reference_path,
        "search": {"best_params": saved["best_params"], "trials": len(saved["trials"])},
        "explainability": explanation.as_dict(),
    }
