"""The batch scoring pipeline's steps as KFP lightweight components: fetch-entity-features -> score.

No ``from __future__ import annotations`` here: kfp reads the annotations.

Imported only when compiling (it imports kfp). As with training, each component
ships only its own source; the work is ``mlspec.runtime.batch`` in the image the
step runs in, so Kubeflow and the local KFP runner run the same code.
"""

from typing import Any, cast

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Dataset, Input, Output

from mlspec.render.kfp_components import GPU_PRODUCT_LABEL, NOTHING_INSTALLED
from mlspec.render.kfp_platform import apply_platform

GPU_PRESENT_LABEL = "nvidia.com/gpu.present"


@dsl.component(**NOTHING_INSTALLED)
def fetch_entity_features(
    deployment_json: str, environment: str, feature_service: str, dataset: Output[Dataset]
) -> int:
    """Point-in-time join of the feature service onto every row of the entity source; returns the row count."""
    from mlspec.runtime.batch import ERROR_PREFIX, BatchError
    from mlspec.runtime.batch import fetch_entity_features as run

    try:
        return int(run(deployment_json, environment, feature_service, dataset.path))
    except BatchError as exc:  # the entity source or the spec: a message for the user, not a traceback
        raise SystemExit(f"{ERROR_PREFIX}{exc}") from None


@dsl.component(**NOTHING_INSTALLED)
def score(
    deployment_json: str,
    environment: str,
    feature_service: str,
    run_id: str,
    expected_sha256_json: str,
    dataset: Input[Dataset],
) -> str:
    """Score the rows in chunks with the registered ONNX model and write them to the sink; returns the summary."""
    from mlspec.runtime.batch import ERROR_PREFIX, BatchError
    from mlspec.runtime.batch import score as run

    try:
        return str(run(deployment_json, environment, feature_service, dataset.path, run_id, expected_sha256_json))
    except BatchError as exc:  # the model, the sink or the spec: a message for the user, not a traceback
        raise SystemExit(f"{ERROR_PREFIX}{exc}") from None


def compile_batch_pipeline(inputs: dict[str, Any]) -> bytes:
    """Build the batch pipeline with the kfp DSL and compile it with kfp's compiler."""
    import tempfile
    from pathlib import Path

    from mlspec.hashing import canonical

    spec_json = canonical(inputs["deployment"])

    @dsl.pipeline(name=inputs["name"], description=inputs["description"])
    def batch_pipeline(
        environment: str = "local",
        deployment_json: str = spec_json,
        feature_service: str = inputs["feature_service"],
        expected_sha256_json: str = "{}",
    ) -> str:
        fetch_task = fetch_entity_features(
            deployment_json=deployment_json, environment=environment, feature_service=feature_service
        )
        score_task = score(
            deployment_json=deployment_json,
            environment=environment,
            feature_service=feature_service,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,  # the run's id: a retried step replaces its own rows
            expected_sha256_json=expected_sha256_json,
            dataset=fetch_task.outputs["dataset"],
        )
        fetch_task.set_container_image(inputs["image"])
        score_task.set_container_image(inputs["image"])
        apply_platform(fetch_task, inputs["platform"], features=True)
        apply_platform(score_task, inputs["platform"], stores=True)
        score_task.set_cpu_request(inputs["cpu"]).set_cpu_limit(inputs["cpu"])
        score_task.set_memory_request(inputs["memory"]).set_memory_limit(inputs["memory"])
        gpu = inputs["gpu"]
        if gpu:
            score_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpu["count"])
            if gpu["type"]:
                kubernetes.add_node_selector(score_task, label_key=GPU_PRODUCT_LABEL, label_value=gpu["type"])
            else:
                kubernetes.add_node_selector(score_task, label_key=GPU_PRESENT_LABEL, label_value="true")
            kubernetes.add_toleration(score_task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        secret = inputs["connection_secret"]
        if secret:  # a k8s:// connection: the secret's key becomes the variable the step resolves
            kubernetes.use_secret_as_env(
                score_task, secret_name=secret["name"], secret_key_to_env={secret["key"]: secret["variable"]}
            )
        # the entity rows and their features change between runs under the same inputs: never reuse either step
        fetch_task.set_caching_options(enable_caching=False)
        score_task.set_caching_options(enable_caching=False)
        return cast(str, score_task.output)  # the run summary JSON: the pipeline's output

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(batch_pipeline, str(path))
        return path.read_bytes()
