"""Rendering: every artifact the real tools consume, validated by their own schemas and libraries, deterministically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlspec.app.project import Project
from mlspec.render.engine import RenderResult
from mlspec.render.write import write_tree
from tests.conftest import FIXTURES, REPO, CliResult, copy_platform, run_mlspec
from tests.k8s_schemas import validate_core, validate_crd

SCHEMAS = FIXTURES / "schemas"
CRDS = {
    "InferenceService": SCHEMAS / "kserve" / "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": SCHEMAS / "kserve" / "serving.kserve.io_servingruntimes.yaml",
    "Application": SCHEMAS / "argocd" / "application-crd.yaml",
    "ApplicationSet": SCHEMAS / "argocd" / "applicationset-crd.yaml",
    "Pipeline": SCHEMAS / "kfp" / "pipelines.kubeflow.org_pipelines.yaml",
    "PipelineVersion": SCHEMAS / "kfp" / "pipelines.kubeflow.org_pipelineversions.yaml",
    "PeerAuthentication": SCHEMAS / "istio" / "security.istio.io_peerauthentications.yaml",
    "RequestAuthentication": SCHEMAS / "istio" / "security.istio.io_requestauthentications.yaml",
    "AuthorizationPolicy": SCHEMAS / "istio" / "security.istio.io_authorizationpolicies.yaml",
    "PodMonitor": SCHEMAS / "prometheus-operator" / "monitoring.coreos.com_podmonitors.yaml",
}
NON_FEAST = ["kfp", "kubernetes", "argocd", "gitops", "mlflow", "monitoring", "edge"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, RenderResult]:
    project = Project.open(REPO)
    validation = project.validate()
    results = {}
    for env in project.environments(validation):
        _, result = project.render(env, NON_FEAST, project.resolve(env, validation))
        assert result is not None and result.ok, env
        results[env] = result
    return results


def files(result: RenderResult) -> dict[str, bytes]:
    return {a.path: a.content for a in result.artifacts}


def documents(content: bytes) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(content) if d]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_every_kubernetes_object_validates_against_the_real_schemas(
    rendered: dict[str, RenderResult], env: str
) -> None:
    checked = 0
    for path, content in files(rendered[env]).items():
        if not path.startswith(("kubernetes", "argocd", "gitops")):
            continue
        for obj in documents(content):
            errors = validate_crd(obj, str(CRDS[obj["kind"]])) if obj["kind"] in CRDS else validate_core(obj)
            assert errors == [], (path, obj["kind"], errors)
            assert obj["metadata"]["labels" if obj["kind"] != "ApplicationSet" else "name"]
            checked += 1
    assert checked >= 10


def test_schema_validation_would_catch_a_typo(rendered: dict[str, RenderResult]) -> None:
    isvc = next(
        d for d in documents(files(rendered["prod"])["kubernetes/fraud-api.yaml"]) if d["kind"] == "InferenceService"
    )
    isvc["spec"]["predictor"]["minReplica"] = isvc["spec"]["predictor"].pop("minReplicas")
    assert any("minReplica" in e for e in validate_crd(isvc, str(CRDS["InferenceService"])))


def test_inference_service_carries_the_deployment_spec(rendered: dict[str, RenderResult]) -> None:
    prod = {d["kind"]: d for d in documents(files(rendered["prod"])["kubernetes/fraud-api.yaml"])}
    predictor = prod["InferenceService"]["spec"]["predictor"]
    assert predictor["model"]["modelFormat"]["name"] == "onnx"
    annotations = prod["InferenceService"]["metadata"]["annotations"]
    # an alias is never a path: it is resolved to an exact version when the object is applied (model_pins)
    assert "storageUri" not in predictor["model"] and "aliases" not in json.dumps(prod["InferenceService"])
    assert annotations["mlspec.dev/model-alias"] == "champion"
    assert annotations["mlspec.dev/artifact-store"] == "azure://uaebankmlprod/models"
    assert annotations["mlspec.dev/model-encryption"] == "mlspec-envelope", "prod seals its models"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (4, 20), "prod's override"
    assert predictor["canaryTrafficPercent"] == 10, "the first canary step"
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["serviceAccountName"] == prod["ServiceAccount"]["metadata"]["name"]
    assert prod["InferenceService"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlspec"
    dev = next(
        d for d in documents(files(rendered["dev"])["kubernetes/fraud-api.yaml"]) if d["kind"] == "InferenceService"
    )
    assert dev["spec"]["predictor"]["minReplicas"] == 1


def test_gpu_deployments_get_a_cpu_fallback_variant(rendered: dict[str, RenderResult]) -> None:
    prod = files(rendered["prod"])
    gpu = next(d for d in documents(prod["kubernetes/fraud-api.yaml"]) if d["kind"] == "InferenceService")
    (fallback,) = documents(prod["kubernetes-fallback/fraud-api.yaml"])
    for isvc in (gpu, fallback):  # both are what KServe's own CRD accepts
        assert validate_crd(isvc, str(CRDS["InferenceService"])) == []
    predictor, resources = gpu["spec"]["predictor"], gpu["spec"]["predictor"]["model"]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "mlspec.dev/variant" not in gpu["metadata"]["annotations"]

    predictor, resources = fallback["spec"]["predictor"], fallback["spec"]["predictor"]["model"]["resources"]
    assert not any("nvidia.com/gpu" in resources[k] for k in ("requests", "limits"))
    assert "nodeSelector" not in predictor and "tolerations" not in predictor
    assert fallback["metadata"]["annotations"]["mlspec.dev/variant"] == "cpu-fallback"
    # the same service otherwise: name, model, CPU and memory, so it can replace the GPU one where no GPU is
    assert fallback["metadata"]["name"] == gpu["metadata"]["name"]
    assert predictor["model"].get("storageUri") == gpu["spec"]["predictor"]["model"].get("storageUri")
    for key in ("mlspec.dev/model-name", "mlspec.dev/model-alias", "mlspec.dev/artifact-store"):
        assert fallback["metadata"]["annotations"][key] == gpu["metadata"]["annotations"][key]
    assert resources["limits"]["cpu"] == gpu["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"]
    assert "kubernetes-fallback/churn-api.yaml" not in prod, "CPU deployments need no fallback"


def test_network_policies_deny_by_default(rendered: dict[str, RenderResult]) -> None:
    namespace = documents(files(rendered["prod"])["kubernetes/namespace.yaml"])
    deny = next(d for d in namespace if d["kind"] == "NetworkPolicy")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allow = next(
        d for d in documents(files(rendered["prod"])["kubernetes/fraud-api.yaml"]) if d["kind"] == "NetworkPolicy"
    )
    assert allow["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "fraud-api"}


def test_ab_rollout_is_one_inference_service_whose_runtime_routes_between_the_variants(
    rendered: dict[str, RenderResult],
) -> None:
    churn = documents(files(rendered["prod"])["kubernetes/churn-api.yaml"])
    (isvc,) = [d for d in churn if d["kind"] == "InferenceService"]
    assert isvc["metadata"]["name"] == "churn-api"
    variants = json.loads(isvc["metadata"]["annotations"]["mlspec.dev/variants"])
    assert variants == [
        {"alias": "champion", "name": "champion", "required": True},
        {"alias": "challenger", "name": "challenger", "required": True},
    ]
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"]["env"]}
    rollout = json.loads(env["MLSPEC_SERVING"])["rollout"]  # the laptop router's rules, inside the runtime
    assert [v["weight"] for v in rollout["variants"]] == [80, 20] and rollout["sticky_key"] == "customer_id"
    assert "storageUri" not in isvc["spec"]["predictor"]["model"], "aliases are pinned at hand-off or apply"
    assert not [p for p in files(rendered["prod"]) if p.endswith(".traffic.yaml")], "no record nothing applies"
    assert validate_crd(isvc, str(CRDS["InferenceService"])) == []


def test_the_canary_controller_is_rendered_with_least_privilege_and_the_scrape_it_reads(
    rendered: dict[str, RenderResult],
) -> None:
    prod = files(rendered["prod"])
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents(prod["kubernetes/rollout-controller.yaml"])}
    (runtime,) = documents(prod["kubernetes/serving-runtime.yaml"])
    role = objects[("Role", "mlspec-rollout")]
    assert role["rules"] == [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                              "verbs": ["get", "list", "watch", "patch"]},
                             {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
                             {"apiGroups": ["serving.knative.dev"], "resources": ["revisions"], "verbs": ["get"]}]  # fmt: skip
    binding = objects[("RoleBinding", "mlspec-rollout")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlspec-rollout", "namespace": "ml-prod"}]
    deployment = objects[("Deployment", "mlspec-rollout")]["spec"]
    (container,) = deployment["template"]["spec"]["containers"]
    assert container["image"] == runtime["spec"]["containers"][0]["image"] and "@sha256:" in container["image"]
    assert container["command"] == ["python", "-m", "mlspec.serving.rollout_watch"]
    assert "--prometheus=http://prometheus-operated.monitoring.svc:9090" in container["args"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    # a rollback moves the served alias back in prod's tracking server (with a token when its Secret exists)
    assert container["env"] == [
        {"name": "MLSPEC_REGISTRY", "value": "https://mlflow.prod.ml.internal"},
        {"name": "MLFLOW_TRACKING_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": "mlspec-rollout-mlflow", "key": "token", "optional": True}}},
    ]  # fmt: skip
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    policy = objects[("NetworkPolicy", "mlspec-rollout")]["spec"]
    assert policy["ingress"] == [] and {"ports": [{"protocol": "TCP", "port": 9090}], "to": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]} in policy["egress"]  # fmt: skip
    monitor = objects[("PodMonitor", "mlspec-model-servers")]
    assert monitor["spec"]["selector"] == {"matchExpressions": [{"key": "mlspec.dev/deployment", "operator": "Exists"}]}
    scrape = objects[("NetworkPolicy", "mlspec-model-servers-scrape")]["spec"]["ingress"][0]
    assert [p["port"] for p in scrape["ports"]] == [8080, 15020]
    for obj in objects.values():
        errors = validate_crd(obj, str(CRDS[obj["kind"]])) if obj["kind"] in CRDS else validate_core(obj)
        assert errors == [], (obj["kind"], errors)
    # every model server pod says where its metrics are (Istio's sidecar rewrites these to its merged metrics)
    isvc = next(d for d in documents(prod["kubernetes/fraud-api.yaml"]) if d["kind"] == "InferenceService")
    assert isvc["spec"]["predictor"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}  # fmt: skip


def test_the_controller_reaches_prometheus_where_the_environment_says() -> None:
    from mlspec.render.rollout_controller import prometheus_namespace, rollout_controller

    assert prometheus_namespace("http://prometheus-operated.monitoring.svc:9090") == "monitoring"
    assert prometheus_namespace("http://kube-prometheus.observability.svc.cluster.local:9090") == "observability"
    assert prometheus_namespace("https://prometheus.bank.example") is None
    objects = rollout_controller("img@sha256:" + "1" * 64, "ml-dev", "https://prometheus.bank.example", {})
    egress = next(o for o in objects if o["metadata"]["name"] == "mlspec-rollout" and o["kind"] == "NetworkPolicy")
    assert {"ports": [{"protocol": "TCP", "port": 443}]} in egress["spec"]["egress"], "outside the cluster: its port"
    scrape = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-scrape"))
    assert scrape["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}}]


def test_cluster_runtimes_look_entity_keys_up_in_feast_s_feature_server(rendered: dict[str, RenderResult]) -> None:
    prod = files(rendered["prod"])
    isvc = next(d for d in documents(prod["kubernetes/fraud-api.yaml"]) if d["kind"] == "InferenceService")
    env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert json.loads(env["MLSPEC_SERVING"])["lookup"] == {
        "feature_service": "fraud_features", "entities": ["customer_id", "merchant_id"], "missing": "error",
        "url": "http://feast-feature-server.ml-prod.svc:6566",
    }  # fmt: skip
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents(prod["gitops/feast.yaml"])}
    server = objects[("Deployment", "feast-feature-server")]["spec"]["template"]["spec"]
    (container,) = server["containers"]
    assert container["command"][:4] == ["feast", "-c", "/feast-repo", "serve"] and "6566" in container["command"]
    assert container["image"].split("@")[0].endswith("mlspec-runtime") and server["restartPolicy"] == "Always"
    assert objects[("Service", "feast-feature-server")]["spec"]["ports"][0]["port"] == 6566
    only_models = objects[("NetworkPolicy", "feast-feature-server")]["spec"]["ingress"][0]["from"]
    assert only_models == [
        {"podSelector": {"matchExpressions": [{"key": "mlspec.dev/deployment", "operator": "Exists"}]}}
    ]
    for key in [("Deployment", "feast-feature-server"), ("Service", "feast-feature-server"),
                ("NetworkPolicy", "feast-feature-server")]:  # fmt: skip
        assert validate_core(objects[key]) == [], key


def test_local_environment_renders_no_cluster_manifests(rendered: dict[str, RenderResult]) -> None:
    assert not [p for p in files(rendered["local"]) if p.startswith(("kubernetes", "argocd"))]
    assert "kfp/fraud-detector.yaml" in files(rendered["local"])


def test_argocd_points_at_the_rendered_manifests(rendered: dict[str, RenderResult]) -> None:
    (app,) = documents(files(rendered["prod"])["argocd/application.yaml"])
    assert app["spec"]["source"] == {
        "repoURL": "https://git.bank.internal/ml/platform.git",
        "path": "rendered/prod",
        "targetRevision": "main",
        "directory": {"recurse": True, "include": "{kubernetes/*.yaml,gitops/*.yaml}"},
    }
    assert app["spec"]["destination"] == {"name": "aks-uaenorth-prod", "namespace": "ml-prod"}
    assert "automated" not in app["spec"]["syncPolicy"], "production syncs on request only"
    (dev_app,) = documents(files(rendered["dev"])["argocd/application.yaml"])
    assert dev_app["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    (appset,) = documents(files(rendered["prod"])["argocd/applicationset.yaml"])
    elements = appset["spec"]["generators"][0]["list"]["elements"]
    assert [e["env"] for e in elements] == ["dev", "prod", "staging"]
    assert files(rendered["prod"])["argocd/applicationset.yaml"] == files(rendered["dev"])["argocd/applicationset.yaml"]


def test_kfp_pipeline_loads_back_with_its_steps_resources_and_parameters(
    rendered: dict[str, RenderResult], tmp_path: Path
) -> None:
    from kfp import components

    content = files(rendered["prod"])["kfp/fraud-detector.yaml"]
    ir, platform = documents(content)
    tasks = ir["root"]["dag"]["tasks"]
    assert set(tasks) == {"fetch-features", "train", "evaluate", "export-onnx", "register"}
    # register logs the dataset (reference data), the torch model, the evaluation and the ONNX model
    assert tasks["register"]["dependentTasks"] == sorted(["fetch-features", "train", "evaluate", "export-onnx"])
    resources = ir["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    assert resources["resourceCpuRequest"] == "4" and resources["resourceMemoryLimit"] == "8Gi"
    assert resources["accelerator"]["resourceCount"] == "1"
    train_platform = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train_platform["nodeSelector"]["labels"] == {
        "nvidia.com/gpu.product": "nvidia-h100",
        "kubernetes.azure.com/scalesetpriority": "spot",
    }
    assert {t["key"] for t in train_platform["tolerations"]} == {
        "nvidia.com/gpu",
        "kubernetes.azure.com/scalesetpriority",
    }
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["epochs"]["defaultValue"] == 20 and params["learning_rate"]["defaultValue"] == 0.001
    assert json.loads(params["gates_json"]["defaultValue"]) == {"auc": ">= 0.85", "recall": ">= 0.6"}
    assert tasks["train"]["cachingOptions"] == {"enableCache": True} and tasks["register"]["cachingOptions"] == {}
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "fraud-detector"
    cpu_ir, *_ = documents(files(rendered["prod"])["kfp/fraud-detector-cpu.yaml"])
    assert "accelerator" not in cpu_ir["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    schedule = json.loads(files(rendered["prod"])["kfp/fraud-detector.schedule.json"])
    assert schedule["cron"] == "0 2 * * *"


def test_mlflow_and_monitoring_data(rendered: dict[str, RenderResult]) -> None:
    registry = json.loads(files(rendered["prod"])["mlflow/registry.json"])
    models = {m["name"]: m for m in registry["registered_models"]}
    assert models["fraud-detector"]["tags"]["mlspec.data_classification"] == "pii"
    assert models["fraud-detector"]["aliases"] == ["challenger", "champion"]
    assert {d["deployment"]: d["aliases"] for d in registry["deployments"]}["churn-api"] == ["challenger", "champion"]
    monitoring = json.loads(files(rendered["prod"])["monitoring/fraud-api.json"])
    assert [f["name"] for f in monitoring["features"]][:2] == ["txn_count_7d", "txn_amount_sum_7d"]
    assert len(monitoring["features"]) == 8
    assert monitoring["drift"] == {
        "method": "psi",
        "evidently_stattest": "psi",
        "threshold": 0.2,
        "schedule_seconds": 3600,
    }
    assert monitoring["action"] == {"on_drift": "retrain", "retrain": "TrainingPipeline/fraud-detector"}


def test_manifest_lists_every_artifact_with_its_hash(rendered: dict[str, RenderResult]) -> None:
    result = rendered["prod"]
    manifest = json.loads(files(result)["manifest.json"])
    listed = {entry["path"]: entry for entry in manifest["artifacts"]}
    assert set(listed) == {a.path for a in result.artifacts} - {"manifest.json"}
    for artifact in result.artifacts[:-1]:
        assert listed[artifact.path]["sha256"] == hashlib.sha256(artifact.content).hexdigest()
        assert listed[artifact.path]["sources"]
    assert manifest["mlspec_version"] and manifest["environment"] == "prod"


def test_rendering_is_byte_for_byte_deterministic(tmp_path: Path, rendered: dict[str, RenderResult]) -> None:
    # A second render in a fresh process with an empty cache must write the same bytes.
    proc = run_mlspec("render", "--all-envs", "--target", "kfp", "--target", "kubernetes", "--target", "argocd", "--target", "gitops",
                      "--target", "mlflow", "--target", "monitoring", "--target", "edge", "-o", str(tmp_path), "-C", str(REPO),
                      "--no-cache")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for env, result in rendered.items():
        for artifact in result.artifacts:
            assert (tmp_path / env / artifact.path).read_bytes() == artifact.content, (env, artifact.path)


def test_write_tree_prunes_only_its_own_stale_files(tmp_path: Path, rendered: dict[str, RenderResult]) -> None:
    result = rendered["prod"]
    write_tree(tmp_path, result.artifacts)
    (tmp_path / "notes.txt").write_text("mine")
    keep = tuple(a for a in result.artifacts if a.path != "kubernetes/churn-api.yaml")
    summary = write_tree(tmp_path, keep)
    assert summary.removed == ("kubernetes/churn-api.yaml",)
    assert not (tmp_path / "kubernetes/churn-api.yaml").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert summary.written == () and len(summary.unchanged) == len(keep), "unchanged files are not rewritten"


def test_canary_on_raw_kserve_is_an_error_not_silently_dropped(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    copy_platform(tmp_path)
    prod = tmp_path / "environments" / "prod.yaml"
    prod.write_text(
        prod.read_text().replace("context: aks-uaenorth-prod}", "context: aks-uaenorth-prod, serving_mode: raw}")
    )
    result = cli("render", "--env", "prod", "--target", "kubernetes", "-C", str(tmp_path))
    assert result.code == 1
    assert "fraud-api.yaml:19:15: error[unsupported-by-target]" in result.out.replace("\\", "/")
    assert not (tmp_path / "rendered" / "prod").exists()


def test_render_cli_usage_errors(cli: Callable[..., CliResult]) -> None:
    assert cli("render", "--env", "prod", "--target", "kfpp", "-C", str(REPO)).code == 2
    assert cli("render", "-C", str(REPO)).code == 2
    assert "did you mean 'prod'" in cli("render", "--env", "prd", "-C", str(REPO)).err


def test_team_feature_store_takes_connections_from_secret_variables() -> None:
    project = Project.open(REPO)
    _, result = project.render("prod", ["feast"], use_cache=False)
    assert result is not None and result.ok
    config = yaml.safe_load(files(result)["feast/feature_store.yaml"])
    assert config["project"] == "uae_bank_ml_prod"
    assert config["registry"] == {
        "registry_type": "sql",
        "path": "${MLSPEC_SECRET_PROD_FEAST_REGISTRY_URL}",
        "cache_ttl_seconds": 60,
    }
    assert config["online_store"] == {"type": "redis", "connection_string": "${MLSPEC_SECRET_PROD_FEAST_REDIS}"}
    local = yaml.safe_load(files(project.render("local", ["feast"], use_cache=False)[1])["feast/feature_store.yaml"])  # type: ignore[arg-type]
    assert local["online_store"] == {"type": "sqlite", "path": "../../../.mlspec/local/feast/online_store.db"}


@pytest.mark.parametrize(
    ("path", "old", "new"),
    [
        ("specs/features/fraud.yaml", "{name: txn_count_7d, dtype: int64", "{name: txn_count_7d, dtype: int32"),
        ("specs/training/fraud-detector.yaml", "epochs: 20", "epochs: 25"),
        ("environments/prod.yaml", "min_replicas: 4, max_replicas: 20", "min_replicas: 5, max_replicas: 20"),
        ("specs/deployments/churn-api.yaml", "weight: 80}", "weight: 70}"),
    ],
)
def test_cached_render_after_a_change_equals_a_fresh_render(tmp_path: Path, path: str, old: str, new: str) -> None:
    copy_platform(tmp_path)
    before = Project.open(tmp_path)
    _, first = before.render("prod")  # fills the cache
    assert first is not None and first.ok
    target = tmp_path / path
    assert old in target.read_text()
    changed_text = target.read_text().replace(old, new)
    if "weight" in new:  # keep the A/B weights adding up to 100
        changed_text = changed_text.replace("weight: 20}", "weight: 30}")
    target.write_text(changed_text)
    _, cached = Project.open(tmp_path).render("prod")
    _, fresh = Project.open(tmp_path).render("prod", use_cache=False)
    assert cached is not None and fresh is not None
    assert files(cached) == files(fresh), "the cache served something stale"
    changed = {p for p, c in files(fresh).items() if files(first).get(p) != c} - {"manifest.json"}
    assert changed, "the change must show in the rendered output"
    assert len(changed) < len(files(fresh)) - 1, "and only where it matters"


def test_render_never_deletes_outside_its_folder(tmp_path: Path, rendered: dict[str, RenderResult]) -> None:
    out = tmp_path / "out"
    write_tree(out, rendered["prod"].artifacts)
    precious = tmp_path / "README.md"
    precious.write_text("keep me")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["artifacts"].append({"path": "../README.md", "sha256": "0" * 64})
    (out / "manifest.json").write_text(json.dumps(manifest))
    summary = write_tree(out, rendered["prod"].artifacts)
    assert precious.read_text() == "keep me" and "../README.md" not in summary.removed
