"""Cluster targets against the exact requests they send: real clients, local HTTP servers, the real schemas.

No cluster runs here, so the official Kubernetes client, kfp.Client and MlflowClient
talk to local servers that speak just enough of each API; every object body is
validated against the KServe CRD or the Kubernetes OpenAPI schemas, every KFP body
against kfp_server_api's models. A server-side dry run against a real cluster runs
only when a kubeconfig is present.
"""

from __future__ import annotations

import copy
import email.parser
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from mlspec.app.paths import state_store
from mlspec.app.project import Project
from mlspec.plan.model import Change
from mlspec.plan.planner import Desired, desired_state
from mlspec.render.base import Artifact
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.cluster import cluster_context
from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.object_store import kserve_storage_uri
from mlspec.state.base import verify_chain
from mlspec.state.model import ResourceState
from mlspec.targets.base import TargetError
from mlspec.targets.cluster.kfp_server import KfpServer
from mlspec.targets.cluster.kubernetes import KubernetesApplier, ObjectRef, load_manifests, managed_labels
from mlspec.targets.cluster.mlflow_server import MlflowServer, load_registry
from mlspec.targets.cluster.model_pins import ServedVersion
from mlspec.targets.cluster.platform import ClusterTarget
from tests.conftest import FIXTURES, REPO
from tests.k8s_schemas import validate_core, validate_crd

ISVC_CRD = str(FIXTURES / "schemas" / "kserve" / "serving.kserve.io_inferenceservices.yaml")
CRDS = {
    "InferenceService": ISVC_CRD,
    "ServingRuntime": str(FIXTURES / "schemas" / "kserve" / "serving.kserve.io_servingruntimes.yaml"),
    **{
        kind: str(FIXTURES / "schemas" / "istio" / f"security.istio.io_{plural}.yaml")
        for kind, plural in (
            ("PeerAuthentication", "peerauthentications"),
            ("RequestAuthentication", "requestauthentications"),
            ("AuthorizationPolicy", "authorizationpolicies"),
        )
    },
    "PodMonitor": str(FIXTURES / "schemas" / "prometheus-operator" / "monitoring.coreos.com_podmonitors.yaml"),
}


# --------------------------------------------------------------------------- a tiny Kubernetes API server
class FakeKube:
    """Objects by REST path, every request recorded; InferenceServices get controller defaults and a status."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.ready: tuple[str, str] = ("True", "")  # status, reason of every InferenceService's Ready condition
        self.lock = threading.Lock()

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        parsed = urlparse(url)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        path = parsed.path
        with self.lock:
            self.requests.append({"method": method, "path": path, "query": query, "headers": headers, "body": body})
            if method == "PATCH":
                obj = json.loads(body)
                if query.get("dryRun") == "All":
                    return 200, obj
                live = self.objects.get(path)
                meta = {**(live or {}).get("metadata", {}), **copy.deepcopy(obj["metadata"])}
                meta.setdefault("uid", str(uuid.uuid4()))
                meta["generation"] = (live or {}).get("metadata", {}).get("generation", 0) + 1
                meta["managedFields"] = [{"manager": query["fieldManager"], "operation": "Apply"}]
                new = {**copy.deepcopy(obj), "metadata": meta}
                if obj["kind"] == "InferenceService":  # what KServe's webhook and controller add
                    new["spec"]["predictor"]["model"]["runtimeVersion"] = "24.01"
                    new["metadata"]["annotations"]["serving.kserve.io/stop"] = "false"
                    status, reason = self.ready
                    new["status"] = {"conditions": [{"type": "Ready", "status": status, "reason": reason}]}
                if obj["kind"] == "Deployment":  # what the Deployment controller reports once its pods run
                    new["status"] = {"observedGeneration": meta["generation"],
                                     "conditions": [{"type": "Available", "status": "True"}]}  # fmt: skip
                self.objects[path] = new
                return 200, new
            if method == "GET":
                if path in self.objects:
                    return 200, self.objects[path]
                wanted = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p)
                items = [
                    o
                    for p, o in self.objects.items()
                    if p.rsplit("/", 1)[0] == path
                    and all(o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
                ]
                if items or path.endswith(("s", "es")):
                    return 200, {"kind": "List", "items": items}
            if method == "DELETE" and path in self.objects:
                return 200, {"kind": "Status", "status": "Success", "object": self.objects.pop(path)}
            return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}


class FakeKfp:
    """KFP's v2beta1 REST API, as much as kfp.Client's pipeline, run and recurring-run calls need."""

    def __init__(self) -> None:
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, dict[str, Any]] = {}
        self.recurring: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []

    @staticmethod
    def _matches(item: dict[str, Any], filter_json: str | None) -> bool:
        if not filter_json:
            return True
        return all(item.get(p["key"]) == p["stringValue"] for p in json.loads(filter_json)["predicates"])

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        parsed = urlparse(url)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        path = parsed.path.removeprefix("/apis/v2beta1")
        record: dict[str, Any] = {"method": method, "path": path, "query": query}
        if headers.get("Content-Type", "").startswith("multipart/"):
            message = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body
            )
            record["upload"] = next(part.get_payload(decode=True) for part in message.walk() if part.get_filename())
        elif body:
            record["json"] = json.loads(body)
        self.requests.append(record)
        new_id = str(uuid.uuid4())
        if (method, path) == ("GET", "/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", "/pipelines"):
            return 200, {"pipelines": [p for p in self.pipelines.values() if self._matches(p, query.get("filter"))]}
        if (method, path) == ("POST", "/pipelines/upload"):
            self.pipelines[new_id] = {"pipeline_id": new_id, "display_name": query["name"]}
            self.versions[new_id + "v"] = {"pipeline_id": new_id, "pipeline_version_id": new_id + "v",
                                           "display_name": query["name"]}  # fmt: skip
            return 200, self.pipelines[new_id]
        if (method, path) == ("POST", "/pipelines/upload_version"):
            version = {"pipeline_id": query["pipelineid"], "pipeline_version_id": new_id, "display_name": query["name"]}
            self.versions[new_id] = version
            return 200, version
        if method == "GET" and path.startswith("/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[2]
            found = [
                v for v in self.versions.values() if v["pipeline_id"] == pid and self._matches(v, query.get("filter"))
            ]
            return 200, {"pipeline_versions": found}
        if (method, path) == ("GET", "/experiments"):
            return 200, {"experiments": [e for e in self.experiments.values() if self._matches(e, query.get("filter"))]}
        if (method, path) == ("POST", "/experiments"):
            self.experiments[new_id] = {**record["json"], "experiment_id": new_id}
            return 200, self.experiments[new_id]
        if (method, path) == ("POST", "/runs"):
            return 200, {**record["json"], "run_id": new_id, "state": "PENDING"}
        if (method, path) == ("GET", "/recurringruns"):
            found = [r for r in self.recurring.values() if self._matches(r, query.get("filter"))]
            return 200, {"recurringRuns": found, "recurring_runs": found}
        if (method, path) == ("POST", "/recurringruns"):
            self.recurring[new_id] = {**record["json"], "recurring_run_id": new_id}
            return 200, self.recurring[new_id]
        if method == "DELETE" and path.startswith("/recurringruns/"):
            self.recurring.pop(path.split("/")[2], None)
            return 200, {}
        return 404, {"error": f"{method} {path} not served by the fake", "code": 5}


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start a local HTTP server for a fake API; yields a function returning its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(fake: FakeKube | FakeKfp) -> str:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, data = fake.handle(self.command, self.path, dict(self.headers), body)
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def kube_client(url: str) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    return client.ApiClient(configuration)


# --------------------------------------------------------------------------- the reference platform's prod
@pytest.fixture(scope="module")
def prod() -> tuple[ResolvedGraph, dict[str, Desired], str]:
    project = Project.open(REPO)
    resolution = project.resolve("prod")
    _, result = project.render("prod", ["kubernetes", "kfp", "mlflow"], resolution)
    assert resolution.graph is not None and result is not None and result.ok
    return resolution.graph, desired_state(resolution.graph, result.artifacts), project.name


def change(desired: dict[str, Desired], ref: str, action: str = "create") -> tuple[Change, dict[str, Artifact]]:
    want = desired[ref]
    artifacts = {p: a for p, a in want.artifacts.items() if p.startswith(("kubernetes/", "kfp/", "mlflow/"))}
    return Change(ref, action, "safe", artifacts={p: a.sha256 for p, a in artifacts.items()}), artifacts  # type: ignore[arg-type]


def state_of(c: Change, ids: dict[str, str]) -> ResourceState:
    return ResourceState(c.ref, "fp", {}, dict(c.artifacts), ids)


class PublishedVersions:
    """The registry as the register step leaves it: every alias at version ``current``, published to prod's store."""

    current = "3"

    def served_version(self, model: str, *, alias: str | None = None, version: str | None = None) -> ServedVersion:
        number = version or self.current
        return ServedVersion(number, "ab" * 32, kserve_storage_uri("azure://uaebankmlprod/models", model, number))


def cluster(tmp_path: Path, prod: Any, applier: KubernetesApplier, **kwargs: Any) -> ClusterTarget:
    graph, desired, project = prod
    rendered = {p: a for want in desired.values() for p, a in want.artifacts.items()}
    kwargs.setdefault("versions", PublishedVersions())
    return ClusterTarget(tmp_path / "out", graph, rendered, project=project, kubernetes=applier, **kwargs)


def env_and_deployment(desired: dict[str, Desired]) -> tuple[str, str]:
    env = next(r for r in desired if r.startswith("Environment/"))
    return env, "Deployment/fraud-api"


# --------------------------------------------------------------------------- Kubernetes
def test_server_side_apply_sends_schema_valid_bodies_in_dependency_order(tmp_path: Path, prod: Any, serve: Any) -> None:
    fake = FakeKube()
    target = cluster(tmp_path, prod, KubernetesApplier(kube_client(serve(fake)), poll=0.01))
    env_ref, dep_ref = env_and_deployment(prod[1])
    for ref in (env_ref, dep_ref):
        c, artifacts = change(prod[1], ref)
        ids = target.apply(c, artifacts, None)
        assert any(k.startswith("uid/") for k in ids), ids
    patches = [r for r in fake.requests if r["method"] == "PATCH"]
    kinds = [json.loads(r["body"])["kind"] for r in patches]
    assert kinds[0] == "Namespace" and "InferenceService" in kinds
    assert kinds.index("ServiceAccount") < kinds.index("NetworkPolicy", 2) < kinds.index("InferenceService")
    for request in patches:
        assert request["headers"]["Content-Type"] == "application/apply-patch+yaml"
        assert request["query"] == {"fieldManager": "mlspec"}, "no force unless asked, no dry run"
        obj = json.loads(request["body"])
        crd = CRDS.get(obj["kind"])
        errors = validate_crd(obj, crd) if crd else validate_core(obj)
        assert errors == [], (obj["kind"], errors)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlspec"
    # the alias was resolved when applied: the exact version's folder in prod's Azure store, and its digest
    (isvc,) = [json.loads(r["body"]) for r in patches if r["path"].endswith("/inferenceservices/fraud-api")]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == (
        "https://uaebankmlprod.blob.core.windows.net/models/models/fraud-detector/versions/3"
    )
    assert isvc["metadata"]["annotations"]["mlspec.dev/model-sha256"] == "ab" * 32
    assert isvc["metadata"]["annotations"]["mlspec.dev/model-version"] == "3"
    assert {r["path"] for r in patches} >= {
        "/api/v1/namespaces/ml-prod",
        "/api/v1/namespaces/ml-prod/serviceaccounts/fraud-api",
        "/apis/serving.kserve.io/v1beta1/namespaces/ml-prod/inferenceservices/fraud-api",
    }
    # applying again sends the same bodies and keeps the objects' uids; the InferenceService, unchanged but for the
    # canary traffic the rollout controller owns, is left alone (the first step again would undo a promotion)
    isvc_path = "/apis/serving.kserve.io/v1beta1/namespaces/ml-prod/inferenceservices/fraud-api"
    before = {p: o["metadata"]["uid"] for p, o in fake.objects.items()}
    fake.objects[isvc_path]["spec"]["predictor"].pop("canaryTrafficPercent")  # the controller promoted it
    fake.requests.clear()
    c, artifacts = change(prod[1], dep_ref)
    ids = target.apply(c, artifacts, state_of(c, {}))
    assert [r["body"] for r in fake.requests if r["method"] == "PATCH"] == [
        r["body"] for r in patches if "fraud-api" in r["path"] and r["path"] != isvc_path
    ]
    assert {p: o["metadata"]["uid"] for p, o in fake.objects.items()} == before
    assert ids["uid/InferenceService/fraud-api"] == before[isvc_path]
    assert "canaryTrafficPercent" not in fake.objects[isvc_path]["spec"]["predictor"]
    # a new version is a new revision: applied, with the first step, so its canary starts
    target.versions.current = "4"  # type: ignore[union-attr]
    fake.requests.clear()
    target.apply(c, artifacts, state_of(c, {}))
    (isvc,) = [json.loads(r["body"]) for r in fake.requests if r["method"] == "PATCH" and r["path"] == isvc_path]
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10 and isvc["spec"]["predictor"]["model"][
        "storageUri"].endswith("/fraud-detector/versions/4")  # fmt: skip


def test_force_and_dry_run_are_sent_only_when_asked(prod: Any, serve: Any) -> None:
    fake = FakeKube()
    applier = KubernetesApplier(kube_client(serve(fake)), force=True, dry_run=True)
    applier.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ml-prod"}}])
    assert fake.requests[0]["query"] == {"fieldManager": "mlspec", "force": "true", "dryRun": "All"}
    assert fake.objects == {}, "a dry run stores nothing"


def test_drift_compares_owned_fields_not_controller_defaults(tmp_path: Path, prod: Any, serve: Any) -> None:
    fake = FakeKube()
    versions = PublishedVersions()
    target = cluster(tmp_path, prod, KubernetesApplier(kube_client(serve(fake)), poll=0.01), versions=versions)
    env_ref, dep_ref = env_and_deployment(prod[1])
    states = {}
    for ref in (env_ref, dep_ref):
        c, artifacts = change(prod[1], ref)
        states[ref] = state_of(c, target.apply(c, artifacts, None))
    dep = states[dep_ref]
    # KServe's defaults (runtimeVersion, extra annotations, status, uid, managedFields) are not drift
    assert target.read_live(dep) == dep.artifacts
    assert target.healthy(dep)
    isvc = fake.objects["/apis/serving.kserve.io/v1beta1/namespaces/ml-prod/inferenceservices/fraud-api"]
    isvc["spec"]["predictor"]["minReplicas"] = 1  # someone scaled it by hand
    live = target.read_live(dep)
    assert live["kubernetes/fraud-api.yaml"] not in (None, dep.artifacts["kubernetes/fraud-api.yaml"])
    assert target.drift(dep) == {
        "kubernetes/fraud-api.yaml": ["InferenceService ml-prod/fraud-api: spec.predictor.minReplicas"]
    }
    assert not target.healthy(dep)
    isvc["spec"]["predictor"]["minReplicas"] = 4
    assert target.drift(dep) == {}
    versions.current = "4"  # the champion alias moved to a new version
    assert target.drift(dep) == {
        "kubernetes/fraud-api.yaml": [
            "InferenceService ml-prod/fraud-api: metadata.annotations.mlspec.dev/model-version",
            "InferenceService ml-prod/fraud-api: spec.predictor.annotations.mlspec.dev/model-version",
            "InferenceService ml-prod/fraud-api: spec.predictor.model.storageUri",
        ]
    }, "the served version follows the alias: reconcile re-pins it"
    versions.current = "3"
    del fake.objects["/api/v1/namespaces/ml-prod/serviceaccounts/fraud-api"]
    assert target.read_live(dep)["kubernetes/fraud-api.yaml"] is None


def test_waiting_names_the_condition_and_its_reason(tmp_path: Path, prod: Any, serve: Any) -> None:
    fake = FakeKube()
    fake.ready = ("False", "RevisionMissing")
    target = cluster(tmp_path, prod, KubernetesApplier(kube_client(serve(fake)), timeout=0.2, poll=0.02))
    c, artifacts = change(prod[1], "Deployment/fraud-api")
    with pytest.raises(TargetError) as error:
        target.apply(c, artifacts, None)
    message = str(error.value)
    assert "InferenceService ml-prod/fraud-api not ready after 0s" in message
    assert "condition Ready is False (reason: RevisionMissing)" in message


def test_prune_deletes_only_this_projects_labelled_objects(tmp_path: Path, prod: Any, serve: Any) -> None:
    graph, desired, project = prod
    fake = FakeKube()
    applier = KubernetesApplier(kube_client(serve(fake)), poll=0.01)
    ours = managed_labels(project, graph.name)
    cm = "/api/v1/namespaces/ml-prod/configmaps/"
    for name, labels in {
        "orphan": ours,  # ours, no longer rendered: pruned
        "staging-thing": {**ours, "mlspec.dev/environment": "staging"},  # another environment's
        "hand-made": {},  # nobody's
    }.items():
        applier.apply([{"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "namespace": "ml-prod", "labels": labels}}])  # fmt: skip
    target = cluster(tmp_path, prod, applier)
    env_ref, dep_ref = env_and_deployment(desired)
    c, artifacts = change(desired, env_ref)
    target.apply(c, artifacts, None)
    assert cm + "orphan" not in fake.objects
    assert {cm + "staging-thing", cm + "hand-made"} <= set(fake.objects)
    # deleting a Deployment removes its objects (reverse order), and nothing else
    c, artifacts = change(desired, dep_ref)
    applied = state_of(c, target.apply(c, artifacts, None))
    deletes_before = len([r for r in fake.requests if r["method"] == "DELETE"])
    target.apply(Change(dep_ref, "delete", "breaking"), {}, applied)
    deleted = [r["path"] for r in fake.requests if r["method"] == "DELETE"][deletes_before:]
    assert deleted[0].endswith("/inferenceservices/fraud-api") and deleted[-1].endswith("/serviceaccounts/fraud-api")
    assert not any("fraud-api" in p for p in fake.objects)
    assert "/api/v1/namespaces/ml-prod" in fake.objects


def test_unreachable_api_server_is_a_target_error() -> None:
    applier = KubernetesApplier(kube_client("http://127.0.0.1:9"))
    with pytest.raises(TargetError, match="cannot reach the API server"):
        applier.get(ObjectRef("v1", "Namespace", None, "x"))


def _kubeconfig() -> str | None:
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return path if Path(path.split(os.pathsep)[0]).is_file() else None


@pytest.mark.skipif(
    _kubeconfig() is None, reason="no kubeconfig (KUBECONFIG or ~/.kube/config): no cluster to dry-run against"
)
def test_server_side_dry_run_against_a_real_cluster(prod: Any) -> None:
    _, desired, _ = prod
    applier = KubernetesApplier(dry_run=True, context=os.environ.get("MLSPEC_KUBE_CONTEXT"))
    objects = [o for a in desired[env_and_deployment(desired)[0]].artifacts.values() if a.path.startswith("kubernetes/")
               for o in load_manifests(a.content)]  # fmt: skip
    if applier.get(ObjectRef("v1", "Namespace", None, "ml-prod")) is None:
        objects = [o for o in objects if o["kind"] == "Namespace"]  # a dry run creates no namespace to put them in
    answered = applier.apply(objects)  # the API server validates every field (strict), stores nothing
    assert next(o["kind"] for o in answered) == "Namespace"


# --------------------------------------------------------------------------- KFP
def _strict_model(data: Any, type_name: str) -> None:
    """``data`` (a JSON body) fits kfp_server_api's model: no unknown fields, nested models checked too."""
    import importlib

    models = importlib.import_module("kfp_server_api").models
    cls = getattr(models, type_name)
    by_json = {v: k for k, v in cls.attribute_map.items()}
    assert isinstance(data, dict), (type_name, data)
    unknown = set(data) - set(by_json)
    assert not unknown, f"{type_name}: unknown fields {unknown}"
    for key, value in data.items():
        kind = cls.openapi_types[by_json[key]]
        if kind.startswith(("V2beta1", "Protobuf")) and isinstance(value, dict) and hasattr(models, kind):
            _strict_model(value, kind)
    cls(**{by_json[k]: v for k, v in data.items()})  # the generated model's own checks (required fields, enums)


def test_kfp_uploads_once_runs_with_the_runtime_context_and_schedules_idempotently(
    tmp_path: Path, prod: Any, serve: Any
) -> None:
    graph, desired, project = prod
    fake = FakeKfp()
    import kfp

    context = cluster_context(graph.name, "https://mlflow.prod.ml.internal", "s3://uae-bank-ml-prod-models")
    with pytest.warns(FutureWarning):
        client = kfp.Client(host=serve(fake))
    server = KfpServer(client, experiment=f"{project}-{graph.name}", context=context)
    rendered = {p: a for want in desired.values() for p, a in want.artifacts.items()}
    target = ClusterTarget(tmp_path / "out", graph, rendered, project=project, kfp=server)
    c, artifacts = change(desired, "TrainingPipeline/fraud-detector")
    assert "kfp/fraud-detector.schedule.json" in artifacts
    ids = target.apply(c, artifacts, None)
    assert {"pipeline_id", "pipeline_version_id", "run_id", "recurring_run_id"} <= set(ids)
    uploads = [r for r in fake.requests if "upload" in r]
    assert uploads[0]["upload"] == artifacts["kfp/fraud-detector.yaml"].content
    runs = [r["json"] for r in fake.requests if (r["method"], r["path"]) == ("POST", "/runs")]
    assert len(runs) == 1
    _strict_model(runs[0], "V2beta1Run")
    sent = runs[0]["runtime_config"]["parameters"]["environment"]
    assert RuntimeContext.from_json(sent) == context and context.tracking_uri == "https://mlflow.prod.ml.internal"
    assert runs[0]["pipeline_version_reference"]["pipeline_version_id"] == ids["pipeline_version_id"]
    (job,) = [r["json"] for r in fake.requests if (r["method"], r["path"]) == ("POST", "/recurringruns")]
    _strict_model(job, "V2beta1RecurringRun")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *", "KFP's 6-field cron"
    assert (str(job["max_concurrency"]), job["no_catchup"], job["mode"]) == ("1", True, "ENABLE")
    # again: the version and recurring run are found by name, only a new run starts
    fake.requests.clear()
    again = target.apply(c, artifacts, state_of(c, ids))
    assert (again["pipeline_version_id"], again["recurring_run_id"]) == (
        ids["pipeline_version_id"],
        ids["recurring_run_id"],
    )
    posts = [r["path"] for r in fake.requests if r["method"] == "POST"]
    assert posts == ["/runs"], posts
    # a changed cron replaces the recurring run
    schedule = json.loads(artifacts["kfp/fraud-detector.schedule.json"].content)
    pipeline = server.upload(
        "fraud-detector", tmp_path / "out/kfp/fraud-detector.yaml", artifacts["kfp/fraud-detector.yaml"].sha256
    )
    new_id, changed = server.ensure_schedule({**schedule, "cron": "0 4 * * *"}, pipeline)
    assert changed and new_id != ids["recurring_run_id"] and list(fake.recurring) == [new_id]
    target.apply(Change(c.ref, "delete", "breaking"), {}, state_of(c, ids))
    assert fake.recurring == {}


# --------------------------------------------------------------------------- MLflow
def test_mlflow_registry_actions_apply_once(mlflow_server: str, prod: Any) -> None:
    _, desired, _ = prod
    env_ref, _ = env_and_deployment(desired)
    document = load_registry(desired[env_ref].artifacts["mlflow/registry.json"].content)
    server = MlflowServer(mlflow_server)  # over HTTP, as against a team's tracking server
    first = server.steps(document)
    assert any(s.startswith("create registered model fraud-detector") for s in first)
    assert any(s.startswith("create experiment") for s in first)
    ids = server.apply(document)
    assert "fraud-detector" in ids["registered_models"]
    assert server.steps(document) == [], "applying twice changes nothing"
    model = server.client.get_registered_model("fraud-detector")
    assert model.tags["mlspec.environment"] == "prod"
    server.client.set_registered_model_tag("fraud-detector", "team-note", "kept")  # not mlspec's: left alone
    server.client.set_registered_model_tag("fraud-detector", "mlspec.old", "x")  # mlspec's, no longer listed
    server.client.set_registered_model_tag("fraud-detector", "mlspec.environment", "dev")  # drifted
    assert server.steps(document) == [
        "set tag fraud-detector mlspec.environment=prod",
        "delete tag fraud-detector mlspec.old",
    ]
    server.apply(document)
    tags = server.client.get_registered_model("fraud-detector").tags
    assert tags["team-note"] == "kept" and "mlspec.old" not in tags and tags["mlspec.environment"] == "prod"
    assert "fraud-detector@champion" in server.missing_aliases(document), "aliases come from training, never invented"


def test_apply_direct_uses_the_cluster_target_and_says_when_it_cannot_reach_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlspec.cli import main
    from tests.integration.test_lifecycle import make_project

    root = make_project(tmp_path / "repo")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config either
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["apply", "--env", "prod", "--auto-approve", "--direct", "-C", str(root)]) == 1
    store = state_store(Project.open(root))
    try:
        applied = set(store.read("prod").resources)
    finally:
        store.close()
    assert "Deployment/fraud-api" not in applied and "DataSource/txns" in applied  # no cluster, nothing claimed
    # without --direct the same environment hands its artifacts to GitOps and applies cleanly
    assert main(["apply", "--env", "prod", "--auto-approve", "-C", str(root)]) == 0


# --------------------------------------------------------------------------- rollouts decided in the cluster
def test_monitor_copies_the_cluster_controllers_decisions_into_the_audit_log_once(
    tmp_path: Path, prod: Any, serve: Any
) -> None:
    """The controller in the namespace records each decision on the InferenceService (it cannot reach the state
    database); `mlspec monitor --env prod` copies the new ones into the hash-chained audit log, each once, and says
    when the controller dropped some before they were copied."""
    from mlspec.app.cluster_rollouts import import_rollout_decisions
    from mlspec.serving.rollout_watch import DECISIONS_ANNOTATION, KEPT
    from tests.conftest import copy_platform

    (tmp_path / "repo").mkdir()
    project = Project.open(copy_platform(tmp_path / "repo"))
    graph = project.resolve("prod").graph
    assert graph is not None
    fake = FakeKube()
    applier = KubernetesApplier(kube_client(serve(fake)), poll=0.01)
    target = cluster(tmp_path, prod, applier)
    target.apply(*change(prod[1], "Deployment/fraud-api"), None)
    path = "/apis/serving.kserve.io/v1beta1/namespaces/ml-prod/inferenceservices/fraud-api"

    def decided(*entries: tuple[float, str, int]) -> None:  # as rollout_watch saves them
        fake.objects[path]["metadata"]["annotations"][DECISIONS_ANNOTATION] = json.dumps([
            {"at": at, "revision": "fraud-api-predictor-00002", "version": "4", "action": action, "percent": percent,
             "reason": f"{action} at {at}"} for at, action, percent in entries])  # fmt: skip

    assert import_rollout_decisions(project, graph, kubernetes=applier) == [], "nothing decided yet"
    decided((100.0, "advance", 50), (200.0, "advance", 100))
    (first,) = import_rollout_decisions(project, graph, kubernetes=applier)
    assert first[0] == "fraud-api" and "advance v4 to 50%; advance v4 to 100%" in first[1]
    decided((100.0, "advance", 50), (200.0, "advance", 100), (300.0, "promote", 100))
    (second,) = import_rollout_decisions(project, graph, kubernetes=applier)
    assert "1 decision(s): promote v4 to 100%" in second[1]
    assert import_rollout_decisions(project, graph, kubernetes=applier) == [], "each decision is copied once"
    decided(*[(1000.0 + i, "advance", 50) for i in range(KEPT)])  # 50 new ones: any before them were lost
    (third,) = import_rollout_decisions(project, graph, kubernetes=applier)
    assert "dropped by the controller" in third[1]
    with state_store(project) as store:
        everything = store.audit()
        records = [e for e in store.audit("prod") if e.record.get("type") == "rollout"]
    assert verify_chain(everything) == []
    assert [e.actor for e in records] == ["mlspec-rollout"] * 3
    assert [[d["at"] for d in e.record["decisions"]] for e in records][:2] == [[100.0, 200.0], [300.0]]
    assert [e.record["missing_before"] for e in records] == [False, False, True]
    assert records[0].record["object"] == "InferenceService ml-prod/fraud-api"
    assert records[0].record["uid"] == fake.objects[path]["metadata"]["uid"]


def test_monitor_on_a_cluster_environment_reads_its_cluster_and_says_when_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlspec.cli import main
    from tests.conftest import copy_platform

    (tmp_path / "repo").mkdir()
    root = copy_platform(tmp_path / "repo")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["monitor", "--env", "prod", "-C", str(root)]) == 1
    err = capsys.readouterr().err
    assert "cannot read InferenceService ml-prod/fraud-api from the cluster" in err and "Traceback" not in err
