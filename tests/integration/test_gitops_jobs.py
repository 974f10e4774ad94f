"""GitOps trains and loads features: what Argo CD syncs in gitops/, checked field by field and against the real schemas.

Every TrainingPipeline and batch Deployment of dev, staging and prod becomes KFP's
Kubernetes-native Pipeline and PipelineVersion (carrying the compiled spec) plus a
PostSync hook Job that starts the run and converges the schedule; the Feast repository
is applied by a Sync hook Job and materialized by a CronJob; no offline data comes from
the repository.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlspec.app.project import Project
from mlspec.render.engine import RenderResult
from mlspec.render.images import image_reference
from mlspec.runtime.context import RuntimeContext, secret_variable
from mlspec.runtime.submit import PruneRequest, SubmitRequest
from tests.conftest import FIXTURES, REPO, CliResult, copy_platform
from tests.k8s_schemas import validate_core, validate_crd

KFP = FIXTURES / "schemas" / "kfp"
CRDS = {
    "Pipeline": KFP / "pipelines.kubeflow.org_pipelines.yaml",
    "PipelineVersion": KFP / "pipelines.kubeflow.org_pipelineversions.yaml",
}
SHARED = ["dev", "staging", "prod"]
PIPELINES = {"churn-model": "kfp/churn-model", "fraud-detector": "kfp/fraud-detector", "batch-churn-batch": "kfp/batch/churn-batch"}  # fmt: skip


def _render(root: Path, env: str) -> tuple[Any, RenderResult]:
    project = Project.open(root)
    resolution = project.resolve(env)
    _, result = project.render(env, ["kfp", "feast", "gitops"], resolution, use_cache=False)
    assert resolution.graph is not None and result is not None
    return resolution.graph, result


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Any, dict[str, bytes]]]:
    out = {}
    for env in [*SHARED, "local"]:
        graph, result = _render(REPO, env)
        assert result.ok, (env, [d.message for d in result.diagnostics])
        out[env] = (graph, {a.path: a.content for a in result.artifacts})
    return out


def documents(content: bytes) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(content) if d]


def by_kind(content: bytes) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in documents(content)}


def gitops_path(pipeline: str) -> str:
    return f"gitops/{pipeline}.yaml" if pipeline.startswith("batch-") else f"gitops/pipeline-{pipeline}.yaml"


def request_of(job: dict[str, Any]) -> SubmitRequest:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["python", "-m", "mlspec.runtime.submit", "--request"]
    return SubmitRequest.from_json(container["command"][4])


@pytest.mark.parametrize("env", SHARED)
def test_every_gitops_object_validates_against_the_real_schemas(
    rendered: dict[str, tuple[Any, dict[str, bytes]]], env: str
) -> None:
    kinds = []
    for path, content in rendered[env][1].items():
        if not path.startswith("gitops/"):
            continue
        for obj in documents(content):
            errors = validate_crd(obj, str(CRDS[obj["kind"]])) if obj["kind"] in CRDS else validate_core(obj)
            assert errors == [], (path, obj["kind"], errors)
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlspec"
            kinds.append(obj["kind"])
    assert sorted(set(kinds)) == [
        "ConfigMap",
        "CronJob",
        "Deployment",
        "Job",
        "NetworkPolicy",
        "Pipeline",
        "PipelineVersion",
        "Service",
        "ServiceAccount",
    ]  # fmt: skip (Deployment, Service: the feature server)


def test_a_wrong_pipeline_version_fails_the_crd_schema(rendered: dict[str, tuple[Any, dict[str, bytes]]]) -> None:
    version = by_kind(rendered["prod"][1]["gitops/pipeline-fraud-detector.yaml"])["PipelineVersion"]
    version["spec"]["pipelineSpecs"] = version["spec"].pop("pipelineSpec")
    assert validate_crd(version, str(CRDS["PipelineVersion"]))


@pytest.mark.parametrize("env", SHARED)
def test_each_pipeline_is_synced_with_its_compiled_spec_and_a_run_submitting_hook(
    rendered: dict[str, tuple[Any, dict[str, bytes]]], env: str
) -> None:
    graph, files = rendered[env]
    registry = graph.env.spec.targets.registry
    namespace = graph.env.spec.targets.kubernetes.namespace
    for pipeline, package in PIPELINES.items():
        objects = by_kind(files[gitops_path(pipeline)])
        compiled = files[f"{package}.yaml"]
        ir = documents(compiled)
        version = objects["PipelineVersion"]
        assert objects["Pipeline"]["metadata"]["name"] == version["spec"]["pipelineName"] == pipeline
        assert version["metadata"]["name"] == f"{pipeline}-{hashlib.sha256(compiled).hexdigest()[:12]}"
        assert version["spec"]["pipelineSpec"] == ir[0], "the exact compiled pipeline"
        assert version["spec"].get("platformSpec") == (ir[1] if len(ir) > 1 else None)
        assert version["metadata"]["annotations"] == {"argocd.argoproj.io/sync-wave": "1"}
        assert {o["metadata"]["namespace"] for o in objects.values()} == {namespace}
        job = objects["Job"]
        assert job["metadata"]["annotations"] == {"argocd.argoproj.io/hook": "PostSync"}, "no delete policy: once"
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == image_reference(graph, "runtime")
        assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
        env_vars = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        assert env_vars["KF_PIPELINES_ENDPOINT"].startswith("http://ml-pipeline.kubeflow.svc")
        token = pod["volumes"][-1]["projected"]["sources"][0]["serviceAccountToken"]
        assert token["audience"] == "pipelines.kubeflow.org"
        request = request_of(job)
        assert (request.pipeline, request.version, request.run) == (pipeline, version["metadata"]["name"], True)
        assert request.experiment == f"uae-bank-ml-{env}" and request.schedule_name == f"{pipeline}-{env}-schedule"
        context = RuntimeContext.from_json(request.parameters["environment"])
        store = registry.artifact_store
        assert store is not None and store.uri == f"azure://uaebankml{env}/models"
        # MLflow's artifact root in the environment's store, and where registered versions are published
        assert (context.environment, context.tracking_uri, context.artifact_root) == (
            env,
            registry.tracking_uri,
            f"wasbs://models@uaebankml{env}.blob.core.windows.net/mlflow",
        )
        assert (context.model_store, context.model_store_credentials) == (store.uri, store.credentials)
        schedule = json.loads(files[f"{package}.schedule.json"])
        assert request.schedule is not None and request.schedule.cron == schedule["cron"]
        assert job["metadata"]["name"].startswith(f"run-{pipeline}-") and len(job["metadata"]["name"]) <= 63


@pytest.mark.parametrize("env", SHARED)
def test_a_last_hook_deletes_the_schedules_of_pipelines_that_left_the_specs(
    rendered: dict[str, tuple[Any, dict[str, bytes]]], env: str
) -> None:
    (job,) = documents(rendered[env][1]["gitops/schedules.yaml"])
    assert job["metadata"]["annotations"] == {
        "argocd.argoproj.io/hook": "PostSync",
        "argocd.argoproj.io/sync-wave": "1",
    }
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["python", "-m", "mlspec.runtime.submit", "--prune"]
    prune = PruneRequest.from_json(container["command"][4])
    assert (prune.experiment, prune.suffix) == (f"uae-bank-ml-{env}", f"-{env}-schedule")
    scheduled = [p for p, package in PIPELINES.items() if f"{package}.schedule.json" in rendered[env][1]]
    assert sorted(prune.keep) == sorted(f"{p}-{env}-schedule" for p in scheduled) and len(scheduled) == 3


def test_only_a_changed_pipeline_gets_a_new_version_and_hook(
    tmp_path: Path, rendered: dict[str, tuple[Any, dict[str, bytes]]]
) -> None:
    copy_platform(tmp_path)
    spec = tmp_path / "specs/training/fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("epochs: 20", "epochs: 25"))
    _, result = _render(tmp_path, "prod")
    after = {a.path: a.content for a in result.artifacts}
    before = rendered["prod"][1]

    def names(files: dict[str, bytes], pipeline: str) -> tuple[str, str]:
        objects = by_kind(files[gitops_path(pipeline)])
        return objects["PipelineVersion"]["metadata"]["name"], objects["Job"]["metadata"]["name"]

    assert names(after, "churn-model") == names(before, "churn-model"), "an unchanged pipeline does not run again"
    old, new = names(before, "fraud-detector"), names(after, "fraud-detector")
    assert old[0] != new[0] and old[1] != new[1], "a changed pipeline is a new version, run once by a new hook"


@pytest.mark.parametrize("env", SHARED)
def test_feast_is_applied_by_a_hook_and_materialized_on_a_schedule(
    rendered: dict[str, tuple[Any, dict[str, bytes]]], env: str
) -> None:
    graph, files = rendered[env]
    store = graph.env.spec.targets.feature_store
    objects = by_kind(files["gitops/feast.yaml"])
    config = objects["ConfigMap"]
    assert config["data"] == {
        "feature_store.yaml": files["feast/feature_store.yaml"].decode(),
        "features.py": files["feast/features.py"].decode(),
    }
    apply = objects["Job"]
    assert apply["metadata"]["annotations"] == {"argocd.argoproj.io/hook": "Sync", "argocd.argoproj.io/sync-wave": "1"}
    cron = objects["CronJob"]
    assert cron["spec"]["schedule"] == store.materialize == "@hourly"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    for pod, verb in ((apply["spec"]["template"], "apply"), (cron["spec"]["jobTemplate"]["spec"]["template"], "materialize-incremental")):  # fmt: skip
        (container,) = pod["spec"]["containers"]
        assert verb in " ".join(container["command"]) and container["image"] == image_reference(graph, "runtime")
        assert {v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v} == {"mlspec-feast-repo"}
        (secret,) = container["envFrom"]
        assert secret["prefix"] == f"{secret_variable(store.connection)}_"
        # every variable feature_store.yaml names comes from that Secret
        needed = set(re.findall(r"\$\{([A-Z0-9_]+)\}", config["data"]["feature_store.yaml"]))
        assert needed and all(v.startswith(secret["prefix"]) for v in needed)


@pytest.mark.parametrize("env", SHARED)
def test_shared_offline_stores_read_object_storage_never_the_checkout(
    rendered: dict[str, tuple[Any, dict[str, bytes]]], env: str
) -> None:
    definitions = rendered[env][1]["feast/features.py"].decode()
    paths = re.findall(r"\bpath=(.+),\n", definitions)
    assert len(paths) == 7 and all(
        p.startswith(f"'az://uae-bank-ml-{env}-features@uaebankml{env}.blob.core.windows.net/") for p in paths
    ), paths
    assert "PROJECT_ROOT /" not in definitions


def test_local_renders_no_gitops_objects(rendered: dict[str, tuple[Any, dict[str, bytes]]]) -> None:
    assert not [p for p in rendered["local"][1] if p.startswith("gitops/")]
    assert "PROJECT_ROOT / 'data/customer_transactions.parquet'" in rendered["local"][1]["feast/features.py"].decode()


def test_a_shared_environment_reading_the_repository_is_refused(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    copy_platform(tmp_path)
    prod = tmp_path / "environments/prod.yaml"
    text = prod.read_text()
    line = next(ln for ln in text.splitlines() if "DataSource/merchant-risk" in ln)
    prod.write_text(text.replace(line + "\n", ""))
    result = cli("render", "--env", "prod", "-C", str(tmp_path))
    assert result.code == 1
    out = result.out.replace("\\", "/")
    assert "specs/sources/payments.yaml:35:" in out and "error[unsupported-by-target]" in out, out
    assert "reads its Feast offline store in its cluster" in out
    assert "DataSource 'merchant-risk' from data/merchant_risk.parquet" in out
    assert "DataSource/customer-transactions" not in out, "only the source still on disk"


def _executors(compiled: bytes) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's Kubernetes platform spec per executor (kfp-kubernetes' secretAsEnv, configMapAsVolume)."""
    platform = next(d for d in yaml.safe_load_all(compiled) if d and "platforms" in d)
    return dict(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])


def _env_from_secrets(executor: dict[str, Any]) -> dict[str, str]:
    return {
        pair["envVar"]: f"{item['secretName']}/{pair['secretKey']}"
        for item in executor.get("secretAsEnv", [])
        for pair in item["keyToEnv"]
    }


@pytest.mark.parametrize("env", SHARED)
def test_pipeline_steps_get_the_feast_repository_and_each_secret_they_resolve_and_no_more(
    rendered: dict[str, tuple[Any, dict[str, bytes]]], env: str
) -> None:
    graph, files = rendered[env]
    feast_config = files["feast/feature_store.yaml"].decode()
    feast_variables = set(re.findall(r"\$\{([A-Z0-9_]+)\}", feast_config))
    hook = next(d for d in documents(files["gitops/pipeline-churn-model.yaml"]) if d["kind"] == "Job")
    context = RuntimeContext.from_json(request_of(hook).parameters["environment"])
    store_variable = secret_variable(context.model_store_credentials)
    assert context.kms_key == graph.env.spec.encryption.kms_key  # steps seal with the environment's key
    training = _executors(files["kfp/churn-model.yaml"])
    fetch = training["exec-fetch-features"]
    (volume,) = fetch["configMapAsVolume"]
    # the ConfigMap gitops/feast.yaml syncs, where the step's RuntimeContext looks for the repository
    assert volume["configMapName"] == by_kind(files["gitops/feast.yaml"])["ConfigMap"]["metadata"]["name"]
    assert volume["mountPath"] == context.feature_repo
    assert set(_env_from_secrets(fetch)) == feast_variables  # every ${VAR} feature_store.yaml names, and no store key
    prefix = f"mlspec-{env}-feast/"
    assert all(source.startswith(prefix) for source in _env_from_secrets(fetch).values())
    assert _env_from_secrets(training["exec-register"]) == {store_variable: f"mlspec-{env}-artifact-store/value"}
    for step in ("exec-train", "exec-evaluate", "exec-export-onnx"):
        assert step not in training, f"{step} reads no secret and no repository"
    batch = _executors(files["kfp/batch/churn-batch.yaml"])
    assert set(_env_from_secrets(batch["exec-fetch-entity-features"])) == feast_variables
    scoring = _env_from_secrets(batch["exec-score"])
    assert scoring[store_variable] == f"mlspec-{env}-artifact-store/value"
    sink = graph.resources["Deployment/churn-batch"].model.spec.batch.sink.connection
    if sink:  # prod writes to its warehouse through secret://prod/warehouse
        assert scoring[secret_variable(sink)] == f"mlspec-{env}-warehouse/value"


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("s3://team-data/merchant_risk.parquet", "is s3://, which the runtime image cannot read"),
        ("gs://team-data/merchant_risk.parquet", "is gs://, which the runtime image cannot read"),
        ("az://team-data/merchant_risk.parquet", "names no storage account"),
    ],
)
def test_a_location_the_runtime_image_cannot_read_is_refused(
    tmp_path: Path, cli: Callable[..., CliResult], location: str, says: str
) -> None:
    copy_platform(tmp_path)
    prod = tmp_path / "environments/prod.yaml"
    text = prod.read_text()
    line = next(ln for ln in text.splitlines() if "DataSource/merchant-risk" in ln)
    old = re.search(r'path: "([^"]+)"', line)
    assert old is not None
    prod.write_text(text.replace(old.group(1), location))
    result = cli("render", "--env", "prod", "-C", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.code == 1
    out = result.out.replace("\\", "/")
    assert "error[unsupported-by-target]" in out and "DataSource 'merchant-risk'" in out and says in out, out
    assert "az://<container>@<account>.blob.core.windows.net" in out, "the fix says what works"
    assert not (tmp_path / "out" / "prod").exists()


def test_a_cluster_batch_writing_predictions_to_a_folder_is_refused(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    copy_platform(tmp_path)
    prod = tmp_path / "environments/prod.yaml"
    lines = prod.read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if "target: Deployment/churn-batch" in ln)
    prod.write_text("".join(lines[:at] + lines[at + 2 :]))  # the override and its patch line: back to the folder sink
    result = cli("render", "--env", "prod", "-C", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.code == 1
    out = result.out.replace("\\", "/")
    assert "specs/deployments/churn-batch.yaml:14:" in out and "error[unsupported-by-target]" in out, out
    assert "writes its predictions to the folder predictions/churn" in out and "whose disk is gone" in out
