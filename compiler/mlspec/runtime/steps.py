"""The training pipeline's five steps, as plain functions the KFP components call.

fetch_features -> train -> evaluate -> export_onnx -> register. Each step runs in
its own process (a pod under Kubeflow, a subprocess under the local runner), so
this module imports nothing heavy itself: each step loads only the engines it uses
(Feast, torch, sklearn, onnxruntime, MLflow), which keeps a local run fast.

``environment_json`` is a :class:`RuntimeContext` as JSON (the pipeline's
``environment`` parameter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlspec.runtime.context import context_parameter


def _spec(training_spec_json: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(training_spec_json)
    return spec


def fetch_features(training_spec_json: str, environment_json: str, dataset_path: str) -> int:
    """Point-in-time join of the feature service with the label rows, written as parquet; returns the row count."""
    ctx = context_parameter(environment_json)  # before importing Feast: a bad context fails fast
    from mlspec.runtime.features import fetch

    spec = _spec(training_spec_json)
    rows = fetch(spec, ctx, dataset_path)
    ctx.seal(dataset_path, f"{spec['metadata']['name']}/fetch-features/dataset")  # features of real customers
    return rows


def train(  # noqa: PLR0917  (KFP components call steps positionally)
    training_spec_json: str,
    environment_json: str,
    dataset_path: str,
    model_path: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    test_fraction: float,
) -> str:
    """Search (when the spec has one) and train on the rows before the held-out test set; returns the device."""
    from mlspec.runtime.dataset import read_dataset
    from mlspec.runtime.model import Params, train_and_save

    spec = _spec(training_spec_json)
    hyper = spec["spec"].get("hyperparameters", {})
    params = Params(
        epochs=int(epochs),
        learning_rate=float(learning_rate),
        batch_size=int(batch_size),
        weight_decay=float(hyper.get("weight_decay", 0.0)),
        optimizer=hyper.get("optimizer", "adam"),
        seed=int(hyper.get("seed", 42)),
    )
    ctx = context_parameter(environment_json)
    frame, features, label = read_dataset(dataset_path, ctx)
    return train_and_save(spec, ctx, frame, features, label, params, float(test_fraction), model_path)


def evaluate(  # noqa: PLR0917
    training_spec_json: str,
    environment_json: str,
    gates_json: str,
    dataset_path: str,
    model_path: str,
    evaluation_path: str,
) -> tuple[dict[str, float], bool]:
    """Metrics on the held-out test set and every gate; writes the evaluation JSON; returns (metrics, passed)."""
    from mlspec.runtime.dataset import read_dataset
    from mlspec.runtime.metrics import check_gates, compute_metric
    from mlspec.runtime.model import configure_threads, load, predict, split_index, to_arrays

    configure_threads()
    spec = _spec(training_spec_json)
    gates: dict[str, str] = json.loads(gates_json)
    ctx = context_parameter(environment_json)
    model, saved = load(model_path, spec, ctx)
    frame, features, label = read_dataset(dataset_path, ctx)
    if features != saved["features"]:
        raise ValueError(f"the dataset's features {features} are not the model's {saved['features']}")
    data = to_arrays(frame, features, label, saved["task"], saved["classes"] or None)
    cut = split_index(len(data.y), saved["test_fraction"])
    if cut != saved["train_rows"]:
        raise ValueError(
            f"the dataset has changed since training ({cut} training rows now, {saved['train_rows']} then)"
        )
    test = data.slice(cut)
    scores = predict(model, test.x)
    wanted = list(spec["spec"].get("evaluation", {}).get("metrics", ["auc"]))
    for extra in [*gates, saved.get("search_metric")]:
        if extra and extra not in wanted:
            wanted.append(extra)
    metrics = {name: compute_metric(name, saved["task"], test.y, scores) for name in wanted}
    results = check_gates(gates, metrics)
    passed = all(r.passed for r in results)
    document = {
        "metrics": metrics,
        "gates": [r.as_dict() for r in results],
        "gates_passed": passed,
        "test_rows": len(test.y),
        "train_rows": cut,
        "test_from": str(frame["event_timestamp"].iloc[cut]),
        "primary_metric": saved.get("search_metric") or wanted[0],
    }
    Path(evaluation_path).parent.mkdir(parents=True, exist_ok=True)
    Path(evaluation_path).write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    return metrics, passed


def export_onnx(
    training_spec_json: str, environment_json: str, dataset_path: str, model_path: str, onnx_path: str
) -> str:
    """ONNX export checked against torch on the whole test set; returns the model's sha256 (of the plaintext; the
    file is written as an envelope when the environment has a ``kms_key``)."""
    from mlspec.runtime.dataset import read_dataset
    from mlspec.runtime.export import export
    from mlspec.runtime.model import configure_threads, load, split_index, to_arrays

    configure_threads()
    spec, ctx = _spec(training_spec_json), context_parameter(environment_json)
    keys = ctx.key_resolver()
    kek = keys.resolve(ctx.kms_key) if keys is not None and ctx.kms_key else None  # fail closed, before any work
    model, saved = load(model_path, spec, ctx)
    frame, features, label = read_dataset(dataset_path, ctx)
    data = to_arrays(frame, features, label, saved["task"], saved["classes"] or None)
    test = data.slice(split_index(len(data.y), saved["test_fraction"]))
    sha = export(model, saved["features"], test.x, onnx_path)
    if kek is not None:  # the step's output is encrypted at rest too; register decrypts it in memory
        from mlspec.crypto import encrypt_file

        encrypt_file(onnx_path, kek, f"mlspec:{ctx.environment}/{spec['metadata']['name']}/export/model.onnx")
    return sha


def register(  # noqa: PLR0917
    training_spec_json: str,
    environment_json: str,
    model_name: str,
    alias: str,
    promote_directly: bool,
    dataset_path: str,
    model_path: str,
    evaluation_path: str,
    onnx_path: str,
) -> str:
    """Log the run to MLflow, register the version when the gates passed, set aliases; returns the summary JSON."""
    from mlspec.runtime.registry import register as run

    summary = run(
        _spec(training_spec_json),
        context_parameter(environment_json),
        model_name=model_name,
        alias=alias,
        promote_directly=bool(promote_directly),
        dataset_path=dataset_path,
        model_path=model_path,
        evaluation_path=evaluation_path,
        onnx_path=onnx_path,
    )
    return json.dumps(summary, sort_keys=True)
