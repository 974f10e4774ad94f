"""The main job on embedded defaults: what `make demo` runs.

The reference platform (specs/, environments/) brought up on this machine from its
specs: validate and check every policy, render what every environment's engines
consume, then plan and apply `local` — Feast applies the feature repository and
materializes the online store, each TrainingPipeline runs on the KFP local runner
(features from Feast, torch, gates, ONNX, MLflow registry), each Deployment is
served by onnxruntime behind an Open Inference Protocol server. Then it asks for a
few predictions with features looked up online, checks the served traffic for
drift with Evidently, and says where everything is. Run it again: the plan is a
no-op and it finishes in seconds.
"""

from __future__ import annotations

import io
import json
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def step(title: str) -> None:
    """Print a section header."""
    print(f"\n==> {title}", flush=True)


def infer(
    url: str, rows: list[dict[str, float]], parameters: dict[str, Any] | None, headers: dict[str, str], ca: str | None
) -> dict[str, Any]:
    """One Open Inference Protocol v2 request with named feature inputs, authenticated by ``headers``, over TLS
    trusting the environment's CA ``ca`` when the endpoint serves TLS."""
    names = list(rows[0])
    body = {
        "id": "demo",
        "inputs": [{"name": n, "shape": [len(rows)], "datatype": "FP32", "data": [r[n] for r in rows]} for n in names],
        **({"parameters": parameters} if parameters else {}),
    }
    request = urllib.request.Request(
        url + "/infer", json.dumps(body).encode(), {"Content-Type": "application/json", **headers}, method="POST"
    )
    context = ssl.create_default_context(cafile=ca) if ca else None
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def refused(url: str, ca: str | None) -> str:
    """What the endpoint answers a caller without credentials (it must refuse)."""
    import urllib.error

    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}).encode()
    request = urllib.request.Request(url + "/infer", body, method="POST")
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            return f"HTTP {reply.status}: NOT REFUSED"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} ({json.loads(exc.read()).get('error', '')})"


def predictions(project: Any, env: str) -> tuple[int, list[str]]:
    """Score a few customers of each Deployment with features from Feast's online store; returns (errors, urls)."""
    from mlspec.app.operations import status
    from mlspec.app.paths import local_paths
    from mlspec.targets.local.feature_store import FeatureStoreEngine

    graph = project.resolve(env).graph
    paths = local_paths(project, graph)
    store = FeatureStoreEngine(paths)
    errors, urls = 0, []
    for server in status(project, env).servers:
        deployment = graph.resources[f"Deployment/{server.deployment}"].model
        service = deployment.spec.features
        config = json.loads((paths.serving / server.deployment / "config.json").read_text())
        features = config["features"]
        entities = [{"customer_id": 100_001 + i, "merchant_id": 5_001 + i} for i in (0, 7, 42)]
        online = store.online_features(service, entities)
        urls.append(server.endpoint)
        # the endpoint refuses callers without credentials: an API key, or a token of the local issuer
        headers = project.caller_headers(env, server.deployment, subject="demo")
        how = ", ".join(headers) or "no credentials"
        print(f"  {server.deployment}: POST {server.endpoint}/infer  (features of {service} from Feast online; {how})")
        print(f"    without credentials: {refused(server.endpoint, server.ca_file)}")
        for index, entity in enumerate(entities):
            row = {name: float(online[name][index] or 0.0) for name in features}
            sticky = {"customer_id": entity["customer_id"]}
            try:
                answer = infer(server.endpoint, [row], sticky, headers, server.ca_file)
            except OSError as exc:
                errors += 1
                print(f"    customer {entity['customer_id']}: request failed: {exc}")
                continue
            score = answer["outputs"][0]["data"][0]
            variant = answer.get("parameters", {}).get("variant", "?")
            print(
                f"    customer {entity['customer_id']}: score {score:.4f}  "
                f"(model {answer['model_version']}, variant {variant})"
            )
    return errors, urls


def batch_predictions(project: Any, env: str) -> int:
    """Show the last batch run of each batch Deployment and a few of its predictions; returns errors."""
    import pandas as pd

    from mlspec.app.operations import status

    errors = 0
    for job in status(project, env).batch:
        last = job.get("last_run")
        if not last:
            errors += 1
            print(f"  {job['deployment']}: no run recorded")
            continue
        print(
            f"  {job['deployment']}: {last['rows']} rows scored with {last['model']} v{last['model_version']} "
            f"in {last['seconds']} s -> {last.get('location') or last.get('sink')}"
        )
        location = last.get("location")
        if location and Path(location).exists():
            frame = pd.read_parquet(location)
            print("    " + frame.head(3).to_string(index=False).replace("\n", "\n    "))
    return errors


def edge_package(project: Any, env: str, mlspec_main: Any) -> int:
    """Verify each edge package against the fingerprint recorded when it was built, then run it on two customers'
    online features; returns errors."""
    from mlspec.app.operations import status
    from mlspec.app.paths import local_paths
    from mlspec.targets.local.feature_store import FeatureStoreEngine

    graph = project.resolve(env).graph
    store = FeatureStoreEngine(local_paths(project, graph))
    errors = 0
    for package in status(project, env).edge:
        if not package.get("signature_ok"):
            errors += 1
            print(f"  {package['deployment']}: {package.get('problem') or 'not built'}")
            continue
        tarball, pin = str(package["tarball"]), str(package["signer"])
        errors += mlspec_main(["edge", "verify", tarball, "--fingerprint", pin]) != 0
        manifest = json.loads((Path(package["package"]) / "manifest.json").read_text())
        names = [f["name"] for f in manifest["inputs"][0].get("features", [])]
        service = graph.resources[f"Deployment/{package['deployment']}"].model.spec.features
        entities = [{"customer_id": 100_001 + i, "merchant_id": 5_001 + i} for i in (0, 7)]
        online = store.online_features(service, entities)
        rows = [{name: float(online[name][i] or 0.0) for name in names} for i in range(len(entities))]
        errors += mlspec_main(["edge", "run", tarball, "--fingerprint", pin, "--input", json.dumps(rows)]) != 0
    return errors


def traffic(project: Any, env: str, count: int = 3000) -> int:
    """Replay training-like rows as live traffic (one keep-alive connection per server); returns requests sent."""
    import http.client
    from urllib.parse import urlparse

    import pandas as pd

    from mlspec.app.operations import status
    from mlspec.app.paths import local_paths

    graph = project.resolve(env).graph
    paths = local_paths(project, graph)
    sent = 0
    for server in status(project, env).servers:
        model = graph.resources[f"Deployment/{server.deployment}"].model.spec.model.name
        reference = paths.data_dir / "datasets" / model / "reference.parquet"
        features = json.loads((paths.serving / server.deployment / "config.json").read_text())["features"]
        if not reference.is_file():
            continue
        plain = paths.runtime_context().read(reference)  # sealed with the environment's key; decrypted in memory
        sample = pd.read_parquet(io.BytesIO(plain))[features].sample(count, replace=True, random_state=7)
        url = urlparse(server.endpoint)
        headers = {"Content-Type": "application/json", **project.caller_headers(env, server.deployment, subject="demo")}
        if url.scheme == "https":  # the environment's CA: the one mlspec status names
            context = ssl.create_default_context(cafile=server.ca_file)
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.hostname, url.port, timeout=10, context=context
            )
        else:
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        for key, row in enumerate(sample.astype("float32").values.tolist()):
            body = {
                "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}],
                "parameters": {"customer_id": key},
            }
            connection.request("POST", url.path + "/infer", json.dumps(body), headers)
            response = connection.getresponse()
            response.read()
            sent += response.status == 200
        connection.close()
    return sent


def main() -> int:
    """Run the demo; returns the process exit code."""
    from generate_data import generate
    from mlspec.app.project import Project
    from mlspec.cli import main as mlspec_main

    started = time.perf_counter()
    step("local data (deterministic synthetic bank data, scripts/generate_data.py)")
    for name, path in generate(ROOT / "data").items():
        print(f"  {name:<24} {path.relative_to(ROOT)}")

    step("mlspec validate + check --all-envs (schemas, references, Rego policies)")
    if mlspec_main(["validate", str(ROOT)]) != 0 or mlspec_main(["check", "--all-envs", "-C", str(ROOT)]) != 0:
        return 1
    step("mlspec render --all-envs (Feast repo, KFP pipelines, KServe, Argo CD, MLflow, monitoring)")
    if mlspec_main(["render", "--all-envs", "-C", str(ROOT)]) != 0:
        return 1

    step("mlspec plan --env local")
    if mlspec_main(["plan", "--env", "local", "--refresh", "-C", str(ROOT)]) != 0:
        return 1
    step("mlspec apply --env local (Feast, KFP local runner + MLflow, onnxruntime servers)")
    if mlspec_main(["apply", "--env", "local", "--refresh", "--auto-approve", "-C", str(ROOT)]) != 0:
        return 1
    step("mlspec status --env local")
    if mlspec_main(["status", "--env", "local", "-C", str(ROOT)]) != 0:
        return 1

    project = Project.open(ROOT)
    step("predictions (features looked up online in Feast, scored by the served models)")
    errors, _ = predictions(project, "local")
    if errors:
        return 1
    step("batch scoring: churn-batch's predictions (parquet, every customer once, with model version and time)")
    if batch_predictions(project, "local"):
        return 1
    step("edge package: fraud-edge verified against the signer's fingerprint, then run with onnxruntime")
    if edge_package(project, "local", mlspec_main):
        return 1
    step("live traffic, then mlspec monitor --env local (Evidently drift on the logged requests)")
    print(f"  sent {traffic(project, 'local')} requests")
    time.sleep(1.2)  # the servers flush their request logs every second
    mlspec_main(["monitor", "--env", "local", "-C", str(ROOT)])
    step("mlspec audit verify (the hash chain against its Ed25519-signed checkpoints on the git branch mlspec-audit)")
    if mlspec_main(["audit", "verify", "-C", str(ROOT)]) != 0:
        return 1

    data = ROOT / ".mlspec" / "local"
    step("where things are")
    print(f"  MLflow UI:       .venv/bin/mlflow ui --backend-store-uri sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    print(f"  drift reports:   {data / 'monitoring'}/<deployment>-drift.html")
    for server in json.loads(_status_json(ROOT)):
        print(f"  metrics:         {server}")
    print("  stop the servers: .venv/bin/mlspec destroy --env local --auto-approve")
    print(f"\n✓ done in {time.perf_counter() - started:.0f} s; run `make demo` again: the plan is a no-op")
    return 0


def _status_json(root: Path) -> str:
    from mlspec.app.operations import status
    from mlspec.app.project import Project

    result = status(Project.open(root), "local")
    return json.dumps([s.endpoint.split("/v2/")[0] + "/metrics" for s in result.servers])


if __name__ == "__main__":
    sys.exit(main())
