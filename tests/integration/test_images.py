"""The runtime and serving images, built with a real Docker engine, and the rendered prod training pipeline run in
the runtime image with kfp's DockerRunner (no mocks). Needs ``scripts/test_services.py`` (MLSPEC_TEST_DOCKER)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlspec.crypto.envelope import decrypt, is_envelope
from mlspec.crypto.keys import LocalKey
from mlspec.render.images import read_record
from mlspec.targets.images import BuildRequest, BuiltImage, build_images
from tests.conftest import REPO, copy_platform
from tests.services import azurite, fresh_database, redis_url

sys.path.insert(0, str(REPO / "scripts"))
import generate_data

pytestmark = pytest.mark.slow
MLSPEC = str(Path(sys.executable).parent / "mlspec")
SERVICE = os.environ.get("MLSPEC_TEST_DOCKER")
if not SERVICE:
    reason = os.environ.get("MLSPEC_TEST_SERVICES_SKIPPED", "run the suite through scripts/test_services.py")
    if os.environ.get("CI"):  # scripts/test_services.py must have started it there: nothing skips silently in CI
        pytest.fail(f"the container tests need a Docker engine in CI ({reason})", pytrace=False)
    pytest.skip(f"needs a Docker engine ({reason})", allow_module_level=True)
DOCKER = json.loads(SERVICE)


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=300)


def _build(root: Path) -> dict[str, BuiltImage]:
    request = BuildRequest(
        root=root, cache_dir=REPO / ".cache" / "images", base_image=DOCKER["base_image"], push=DOCKER["registry"]
    )
    return {item.image.role: item for item in build_images(request)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, BuiltImage], dict[str, BuiltImage]]:
    """A copy of the reference platform whose images were built twice (the second time from the cache)."""
    root = copy_platform(tmp_path_factory.mktemp("images"))
    first = _build(root)
    second = _build(root)
    return root, first, second


def test_an_unchanged_build_is_a_cache_hit_with_the_same_image(
    built: tuple[Path, dict[str, BuiltImage], dict[str, BuiltImage]],
) -> None:
    root, first, second = built
    for role in ("runtime", "serving"):
        assert second[role].cached, role
        assert second[role].image.image_id == first[role].image.image_id
        assert second[role].image.digest == first[role].image.digest and second[role].image.digest.startswith("sha256:")
    recorded = {(i.registry, i.role): i for i in read_record(root)}
    for role in ("runtime", "serving"):
        image = recorded[(DOCKER["registry"], role)]
        assert image.image_id == first[role].image.image_id and image.size > 0
        inspected = _docker("image", "inspect", "--format", "{{json .RepoDigests}}", image.reference)
        assert image.reference in json.loads(inspected.stdout)


def test_images_run_as_non_root_and_serving_has_no_torch_compiler_or_pip(
    built: tuple[Path, dict[str, BuiltImage], dict[str, BuiltImage]],
) -> None:
    root, first, _ = built
    serving, runtime = first["serving"].image.reference, first["runtime"].image.reference
    for reference in (serving, runtime):
        user = _docker("run", "--rm", "--network", "none", reference, "id", "-u")
        assert user.returncode == 0 and user.stdout.strip() not in ("", "0"), reference
    works = _docker("run", "--rm", "--network", "none", serving, "python3", "-c",
                    "import onnxruntime, cryptography, mlspec.serving.server")  # fmt: skip
    assert works.returncode == 0, works.stderr
    torch = _docker("run", "--rm", "--network", "none", serving, "python3", "-c", "import torch")
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    tools = _docker("run", "--rm", "--network", "none", serving, "sh", "-c",
                    "command -v gcc cc c++ make pip pip3 || true")  # fmt: skip
    assert tools.stdout.strip() == ""
    runtime_has = _docker("run", "--rm", "--network", "none", runtime, "python3", "-c",
                          "import torch, kfp, feast, mlflow, onnx, mlspec.runtime.steps; print(torch.__version__)")  # fmt: skip
    assert runtime_has.returncode == 0 and runtime_has.stdout.strip().endswith("+cpu"), runtime_has.stderr
    for role, expected in (("serving", "onnxruntime"), ("runtime", "torch")):
        sbom = json.loads((root / first[role].image.sbom).read_text())
        assert sbom["bomFormat"] == "CycloneDX"
        assert expected in {component["name"] for component in sbom["components"]}, role
    serving_sbom = json.loads((root / first["serving"].image.sbom).read_text())
    assert "torch" not in {component["name"] for component in serving_sbom["components"]}


def _prod_on_the_test_registry(root: Path) -> None:
    prod = root / "environments" / "prod.yaml"
    text = prod.read_text()
    current = next(line for line in text.splitlines() if "images: {registry:" in line)
    prod.write_text(text.replace(current, f"    images: {{registry: {DOCKER['registry']}}}"))


def test_the_prod_rehearsal_runs_what_argo_cd_would_against_azurite_redis_and_postgres(
    built: tuple[Path, dict[str, BuiltImage], dict[str, BuiltImage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mlspec rehearse --env prod`: Feast apply, both training pipelines as compiled, the batch pipeline and
    materialization, in the runtime image, reading az:// sources from Azurite and writing models there."""
    import psycopg
    import redis
    from azure.storage.blob import BlobServiceClient
    from mlflow import MlflowClient

    root, first, _ = built
    _prod_on_the_test_registry(root)
    # the last 30 days: materialize-incremental loads each view's ttl back from now, as the CronJob does
    monkeypatch.setattr(generate_data, "START", dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    generate_data.generate(root / "data", customers=400, days=30)
    blob = azurite()
    account, key, port = (
        blob["MLSPEC_TEST_AZURITE_ACCOUNT"],
        blob["MLSPEC_TEST_AZURITE_KEY"],
        blob["MLSPEC_TEST_AZURITE_PORT"],
    )
    connection = (
        f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};"
        f"BlobEndpoint=https://127.0.0.1:{port}/{account};"
    )
    warehouse = fresh_database("rehearsal")
    redis_at = redis_url().removeprefix("redis://").split("/", 1)[0]
    args = ["rehearse", "--env", "prod", "--format", "json", "--azure", connection, "--redis", redis_at,
            "--postgres", warehouse, "--ca-file", blob["MLSPEC_TEST_AZURITE_CA"], "-C", str(root)]  # fmt: skip
    done = subprocess.run([MLSPEC, *args], capture_output=True, text=True, timeout=1800, check=False)
    report = json.loads(done.stdout)
    failed = [step for step in report["steps"] if not step["ok"]]
    logs = "".join(Path(step["log"]).read_text()[-6000:] for step in failed)
    assert done.returncode == 0 and not failed, done.stderr[-3000:] + logs
    assert report["ok"] and report["image"] == first["runtime"].image.reference
    kinds = [(step["kind"], step["name"]) for step in report["steps"]]
    assert kinds == [("feast-apply", "feast-apply"), ("pipeline", "churn-model"), ("pipeline", "fraud-detector"),
                     ("batch", "batch-churn-batch"), ("materialize", "feast-materialize"),
                     ("serve", "churn-api"), ("serve", "fraud-api")]  # fmt: skip
    summaries = {step["name"]: json.loads(step["output"]) for step in report["steps"] if step["output"]}
    churn = summaries["churn-model"]
    assert churn["gates_passed"] and churn["device"] == "cpu" and churn["version"] == "1"
    # the registered version is in the environment's artifact store (Azurite), immutable and with its digest
    store = BlobServiceClient.from_connection_string(connection, connection_verify=blob["MLSPEC_TEST_AZURITE_CA"])
    models = store.get_container_client("models")
    folder = "models/churn-model/versions/1/"
    names = {b.name for b in models.list_blobs(name_starts_with=folder)}
    assert {folder + f for f in ("model.onnx", "model.sha256", "manifest.json")} <= names, names
    manifest = json.loads(models.download_blob(folder + "manifest.json").readall())
    assert manifest["model_sha256"] == churn["onnx_sha256"] and manifest["version"] == "1"
    # sealed with prod's kms:// key (the rehearsal's stand-in KMS): only that key opens it, to the recorded model
    assert manifest["sealed"] and manifest["encryption"]["key_ref"] == "kms://prod-platform"
    stored = models.download_blob(folder + "model.onnx").readall()
    assert is_envelope(stored)
    (key_path,) = (Path(report["workdir"]) / "kms").glob("*.key")
    assert key_path.stat().st_mode & 0o077 == 0, "the stand-in key is its owner's only"
    plain = decrypt(stored, LocalKey(key_path.read_bytes(), "kms://prod-platform"))
    assert hashlib.sha256(plain).hexdigest() == churn["onnx_sha256"]
    assert any(n.startswith("mlflow/") for n in (b.name for b in models.list_blobs(name_starts_with="mlflow/")))
    tracking = f"sqlite:///{report['workdir']}/mlflow.db"
    client = MlflowClient(tracking, registry_uri=tracking)  # not the registry another test set process-wide
    assert str(client.get_model_version_by_alias("churn-model", "champion").version) == "1"
    # the batch pipeline scored every customer of the scoring source into the warehouse stand-in
    batch = summaries["batch-churn-batch"]
    with psycopg.connect(warehouse) as db:
        (rows,) = db.execute("SELECT count(*) FROM ml_prod.churn_scores").fetchone() or (0,)
    assert rows == batch["rows"] > 0
    # each InferenceService was served by the rendered ServingRuntime (the serving image) from the version folder
    # KServe would download, pinned to its digest, decrypted in memory with prod's key, and answered an inference
    served = {step["name"]: json.loads(step["output"]) for step in report["steps"] if step["kind"] == "serve"}
    assert served["churn-api"]["model_version"] == "1" and served["fraud-api"]["model_version"] == "1"
    assert all(len(answer["outputs"][0]["data"]) == 1 for answer in served.values())
    serve_log = Path(next(s["log"] for s in report["steps"] if s["name"] == "churn-api")).read_text()
    # the A/B Deployment is one runtime that downloaded, verified and routes between both of its variants
    for variant in ("champion", "challenger"):
        assert f"variant {variant} (version 1) verified and loaded" in serve_log, serve_log[-2000:]
    assert "grpc listening" in serve_log, serve_log[-2000:]
    # materialization wrote the online store
    online = redis.Redis.from_url(redis_url())
    assert any(True for _ in online.scan_iter(count=1000)), "feast materialize wrote nothing to Redis"
