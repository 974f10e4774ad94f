"""Benchmark: the container overhead of a rehearsal. Prints one table.

The reference prod's churn-model pipeline, rehearsed in the runtime image (kfp's DockerRunner, features from
Azurite over HTTPS, MLflow's artifacts and the published version in Azurite), against the same pipeline
compiled for the local environment on the subprocess runner (files on disk, the same sample data). Both
train the same model with the same hyperparameters; the difference is containers, object storage and TLS.

Run it under the test services, which start Docker, the loopback registry, Azurite, Redis and PostgreSQL:

    python scripts/test_services.py -- python bench/rehearsal.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mlspec.app.options import RehearsalOptions
from mlspec.app.project import Project
from mlspec.render.write import write_tree
from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.local_run import run_pipeline
from mlspec.targets.images import BuildRequest, build_images

REPO = Path(__file__).resolve().parent.parent
PIPELINE = "churn-model"


def _platform(root: Path, registry: str) -> None:
    for name in ("mlspec.yaml", "specs", "environments", "images.lock.json"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    prod = root / "environments" / "prod.yaml"
    text = prod.read_text()
    current = next(line for line in text.splitlines() if "images: {registry:" in line)
    prod.write_text(text.replace(current, f"    images: {{registry: {registry}}}"))


def _subprocess_run(root: Path) -> float:
    """The local environment's compiled pipeline on the subprocess runner (after feast apply), in seconds."""
    import subprocess

    project = Project.open(root)
    _, result = project.render("local", ["feast", "kfp", "mlflow"], use_cache=False)
    assert result is not None and result.ok
    write_tree(root / "rendered" / "local", result.artifacts)
    repo = root / "rendered" / "local" / "feast"
    (root / ".mlspec" / "local" / "feast").mkdir(parents=True, exist_ok=True)
    feast = str(Path(sys.executable).parent / "feast")
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(root)}
    subprocess.run([feast, "apply"], cwd=repo, env=env, check=True, capture_output=True)
    ctx = RuntimeContext.local("local", root, root / ".mlspec" / "local", repo)
    started = time.monotonic()
    summary = run_pipeline(root / "rendered" / "local" / "kfp" / f"{PIPELINE}.yaml", {"environment": ctx.to_json()},
                           root / ".mlspec" / "bench-pipelines")  # fmt: skip
    assert summary["gates_passed"]
    return time.monotonic() - started


def main() -> None:
    """Rehearse prod's churn-model in containers, run local's on the subprocess runner, print both."""
    sys.path.insert(0, str(REPO / "scripts"))
    from generate_data import generate  # a sibling script, not a package

    docker = json.loads(os.environ["MLSPEC_TEST_DOCKER"])
    account, key = os.environ["MLSPEC_TEST_AZURITE_ACCOUNT"], os.environ["MLSPEC_TEST_AZURITE_KEY"]
    port, ca = os.environ["MLSPEC_TEST_AZURITE_PORT"], os.environ["MLSPEC_TEST_AZURITE_CA"]
    azure = (f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};"
             f"BlobEndpoint=https://127.0.0.1:{port}/{account};")  # fmt: skip
    redis = os.environ["MLSPEC_TEST_REDIS_URL"].removeprefix("redis://").split("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="mlspec-bench-rehearsal-") as folder:
        root = Path(folder)
        _platform(root, docker["registry"])
        request = BuildRequest(root=root, cache_dir=REPO / ".cache" / "images", base_image=docker["base_image"],
                               push=docker["registry"], roles=("runtime",))  # fmt: skip
        build_images(request)
        generate(root / "data", customers=400, days=30)
        options = RehearsalOptions(
            azure=azure, redis=redis, postgres=os.environ["MLSPEC_TEST_POSTGRES_URL"], ca_file=ca
        )
        started = time.monotonic()
        report = Project.open(root).rehearse("prod", options, pipelines=(PIPELINE,))
        rehearsal_total = time.monotonic() - started
        assert report.ok, [(s.name, s.log) for s in report.steps if not s.ok]
        steps = {step.name: step.seconds for step in report.steps}
        local = _subprocess_run(root)
    containers = steps[PIPELINE]
    print(f"\n{PIPELINE}: reference prod rehearsed in the runtime image vs local on the subprocess runner\n")
    print(f"{'run':<44} {'seconds':>8}")
    print("-" * 53)
    print(f"{'feast apply Job (container)':<44} {steps['feast-apply']:>8.1f}")
    print(f"{'pipeline, 5 steps in containers, Azurite':<44} {containers:>8.1f}")
    print(f"{'pipeline, 5 steps as subprocesses, files':<44} {local:>8.1f}")
    print(f"{'whole rehearsal (seeding, checks, apply, run)':<44} {rehearsal_total:>8.1f}")
    print(f"\ncontainer overhead of the pipeline: {containers - local:+.1f} s ({containers / local:.2f}x)")


if __name__ == "__main__":
    main()
