"""The runtime and serving images, built with a real Docker engine, and the rendered prod training pipeline run in
the runtime image with kfp's DockerRunner (no mocks). Needs ``scripts/test_services.py`` (MLSPEC_TEST_DOCKER)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlspec.app.project import Project
from mlspec.render.images import RECORD_FILE, read_record
from mlspec.render.write import write_tree
from mlspec.runtime.context import RuntimeContext
from mlspec.targets.images import BuildRequest, BuiltImage, build_images
from tests.conftest import REPO, copy_platform

sys.path.insert(0, str(REPO / "scripts"))
from generate_data import generate

pytestmark = pytest.mark.slow
FEAST = str(Path(sys.executable).parent / "feast")
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


def test_the_rendered_prod_training_pipeline_runs_in_the_runtime_image(
    built: tuple[Path, dict[str, BuiltImage], dict[str, BuiltImage]], tmp_path: Path
) -> None:
    """prod's compiled churn-model pipeline, exactly as rendered, on the DockerRunner against local stores."""
    from kfp import components, local

    root, first, _ = built
    prod = root / "environments" / "prod.yaml"
    text = prod.read_text()
    current = next(line for line in text.splitlines() if "images: {registry:" in line)
    prod.write_text(text.replace(current, f"    images: {{registry: {DOCKER['registry']}}}"))
    generate(root / "data", customers=400, days=30)
    project = Project.open(root)
    for env, targets in (("local", ["feast", "kfp", "mlflow"]), ("prod", ["kfp"])):
        _, result = project.render(env, targets, use_cache=False)
        assert result is not None and result.ok, result and result.diagnostics
        write_tree(root / "rendered" / env, result.artifacts)
    pipeline = root / "rendered" / "prod" / "kfp" / "churn-model.yaml"
    assert f"image: {first['runtime'].image.reference}" in pipeline.read_text()
    repo = root / "rendered" / "local" / "feast"
    (root / ".mlspec" / "local" / "feast").mkdir(parents=True)
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(root)}
    apply = subprocess.run(
        [FEAST, "apply"], cwd=repo, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert apply.returncode == 0, apply.stderr[-2000:]
    subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)  # the image's user (uid 10001) writes there
    ctx = RuntimeContext.local("local", root, root / ".mlspec" / "local", repo)
    # the project sits under the pipeline root, which the DockerRunner mounts at the same path
    local.init(runner=local.DockerRunner(network_mode="host"), pipeline_root=str(root), raise_on_error=True)
    task = components.load_component_from_file(str(pipeline))(environment=ctx.to_json())
    summary = json.loads(task.output)
    assert summary["model_name"] == "churn-model" and summary["gates_passed"]
    assert summary["version"] is not None and summary["device"] == "cpu"
    assert Path(summary["onnx_path"]).is_file()
    assert (root / RECORD_FILE).is_file()
