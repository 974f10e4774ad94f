"""The training pipeline's steps as KFP lightweight components.

No ``from __future__ import annotations`` here: kfp reads the annotations.

Imported only by the kfp renderer (it imports kfp). Each component ships only its
own source to the cluster, so bodies import what they use; the work itself lives
in ``mlspec.runtime.steps`` of the image the step runs in, so the same code runs
under Kubeflow and the local KFP runner.
"""

import tempfile
from pathlib import Path
from typing import Any, cast

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from mlspec.hashing import canonical
from mlspec.render.kfp_platform import apply_platform

# Components install nothing when they start: every step runs in the runtime image (mlspec with kfp and its
# engines), set per task from the environment's record (``mlspec.render.images``).
BASE_IMAGE = "mlspec-runtime"
NOTHING_INSTALLED: dict[str, Any] = {"base_image": BASE_IMAGE, "packages_to_install": [], "install_kfp_package": False}
SPOT_LABEL = "kubernetes.azure.com/scalesetpriority"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


@dsl.component(**NOTHING_INSTALLED)
def fetch_features(training_spec_json: str, environment: str, dataset: Output[Dataset]) -> int:
    """Point-in-time join of the feature service with the label source; returns the row count."""
    from mlspec.runtime.steps import fetch_features as run

    return int(run(training_spec_json, environment, dataset.path))


@dsl.component(**NOTHING_INSTALLED)
def train(
    training_spec_json: str,
    environment: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    test_fraction: float,
    dataset: Input[Dataset],
    model: Output[Model],
) -> str:
    """Search (when asked) and train on the rows before the held-out test set; returns the device used."""
    from mlspec.runtime.steps import train as run

    return str(
        run(training_spec_json, environment, dataset.path, model.path, epochs, learning_rate, batch_size, test_fraction)
    )


@dsl.component(**NOTHING_INSTALLED)
def evaluate(
    training_spec_json: str,
    environment: str,
    gates_json: str,
    dataset: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    evaluation: Output[Artifact],
) -> bool:
    """Score the held-out split and check every gate; returns whether all gates pass."""
    import math

    from mlspec.runtime.steps import evaluate as run

    results, passed = run(training_spec_json, environment, gates_json, dataset.path, model.path, evaluation.path)
    for name, value in results.items():
        if math.isfinite(value):
            metrics.log_metric(name, value)
    return bool(passed)


@dsl.component(**NOTHING_INSTALLED)
def export_onnx(
    training_spec_json: str, environment: str, dataset: Input[Dataset], model: Input[Model], onnx_model: Output[Model]
) -> str:
    """Export to ONNX and check it matches the trained model on the test split; returns the sha256."""
    from mlspec.runtime.steps import export_onnx as run

    return str(run(training_spec_json, environment, dataset.path, model.path, onnx_model.path))


@dsl.component(**NOTHING_INSTALLED)
def register(
    training_spec_json: str,
    environment: str,
    model_name: str,
    alias: str,
    promote_directly: bool,
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    onnx_model: Input[Model],
) -> str:
    """Log the run, register the version when the gates passed, set aliases; returns the summary JSON."""
    from mlspec.runtime.steps import register as run

    return str(
        run(
            training_spec_json,
            environment,
            model_name,
            alias,
            promote_directly,
            dataset.path,
            model.path,
            evaluation.path,
            onnx_model.path,
        )
    )


# model.framework -> its train component (the renderer's FRAMEWORKS lists the same keys).
TRAINERS = {"torch": train}


def compile_pipeline(inputs: dict[str, Any]) -> bytes:
    """Build the pipeline with the kfp DSL and compile it with kfp's compiler."""
    trainer = TRAINERS[inputs["framework"]]
    spec_json = canonical(inputs["spec"])
    gates_json = canonical(inputs["gates"])

    @dsl.pipeline(name=inputs["name"], description=inputs["description"])
    def training_pipeline(
        environment: str = "local",
        training_spec_json: str = spec_json,
        epochs: int = inputs["epochs"],
        learning_rate: float = inputs["learning_rate"],
        batch_size: int = inputs["batch_size"],
        test_fraction: float = inputs["test_fraction"],
        gates_json: str = gates_json,
        model_name: str = inputs["model_name"],
        alias: str = inputs["alias"],
        promote_directly: bool = True,
    ) -> str:
        fetch_task = fetch_features(training_spec_json=training_spec_json, environment=environment)
        train_task = trainer(
            training_spec_json=training_spec_json,
            environment=environment,
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            test_fraction=test_fraction,
            dataset=fetch_task.outputs["dataset"],
        )
        train_task.set_cpu_request(inputs["cpu"]).set_cpu_limit(inputs["cpu"])
        train_task.set_memory_request(inputs["memory"]).set_memory_limit(inputs["memory"])
        if inputs["gpu"]:
            train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(inputs["gpu"]["count"])
            kubernetes.add_node_selector(train_task, label_key=GPU_PRODUCT_LABEL, label_value=inputs["gpu"]["type"])
            kubernetes.add_toleration(train_task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        if inputs["spot"]:
            kubernetes.add_node_selector(train_task, label_key=SPOT_LABEL, label_value="spot")
            kubernetes.add_toleration(train_task, key=SPOT_LABEL, operator="Equal", value="spot", effect="NoSchedule")
        evaluate_task = evaluate(
            training_spec_json=training_spec_json,
            environment=environment,
            gates_json=gates_json,
            dataset=fetch_task.outputs["dataset"],
            model=train_task.outputs["model"],
        )
        export_task = export_onnx(
            training_spec_json=training_spec_json,
            environment=environment,
            dataset=fetch_task.outputs["dataset"],
            model=train_task.outputs["model"],
        )
        register_task = register(
            training_spec_json=training_spec_json,
            environment=environment,
            model_name=model_name,
            alias=alias,
            promote_directly=promote_directly,
            dataset=fetch_task.outputs["dataset"],
            model=train_task.outputs["model"],
            evaluation=evaluate_task.outputs["evaluation"],
            onnx_model=export_task.outputs["onnx_model"],
        )
        for task in (fetch_task, train_task, evaluate_task, export_task, register_task):
            task.set_container_image(inputs["image"])
            apply_platform(task, inputs["platform"], features=task is fetch_task, stores=task is register_task)
        for task in (fetch_task, train_task, evaluate_task, export_task):
            task.set_caching_options(enable_caching=inputs["caching"])
        register_task.set_caching_options(enable_caching=False)  # registering twice must happen twice
        return cast(str, register_task.output)  # the summary JSON: the pipeline's output

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(training_pipeline, str(path))
        return path.read_bytes()
