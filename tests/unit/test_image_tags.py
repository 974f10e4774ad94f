"""The images' content tag and requirements, without Docker: what makes an unchanged build a cache hit."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlspec.render.images import RecordedImage, read_record
from mlspec.targets.images import BuildRequest, content_tag, role_requirements, write_record
from tests.conftest import REPO


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "requirements").mkdir(parents=True)
    shutil.copytree(REPO / "docker", source / "docker")
    shutil.copy(REPO / "requirements" / "lock.txt", source / "requirements" / "lock.txt")
    shutil.copy(REPO / "pyproject.toml", source / "pyproject.toml")
    return source


def test_the_tag_changes_exactly_when_an_input_of_the_image_does(tmp_path: Path) -> None:
    source = _source(tmp_path)
    request = BuildRequest(root=tmp_path, cache_dir=tmp_path / "cache", source=source, base_image="debian-py:1")
    tags = {role: content_tag(request, role) for role in ("runtime", "serving")}
    assert tags["runtime"] != tags["serving"]
    assert content_tag(request, "runtime") == tags["runtime"]  # nothing changed: the same tag
    cuda = BuildRequest(
        root=tmp_path, cache_dir=tmp_path, source=source, base_image="debian-py:1", torch_variant="cu128"
    )
    assert content_tag(cuda, "runtime") != tags["runtime"] and content_tag(cuda, "serving") == tags["serving"]
    other_base = BuildRequest(root=tmp_path, cache_dir=tmp_path, source=source, base_image="debian-py:2")
    assert content_tag(other_base, "serving") != tags["serving"]
    lock = source / "requirements" / "lock.txt"
    lock.write_text(lock.read_text().replace("onnxruntime==", "onnxruntime==0", 1))
    assert content_tag(request, "serving") != tags["serving"]
    dockerfile = source / "docker" / "runtime.Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert content_tag(request, "runtime") != tags["runtime"]


def test_the_serving_image_installs_onnxruntime_and_no_torch() -> None:
    serving = {r.split("==")[0] for r in role_requirements(REPO, "serving")}
    runtime = {r.split("==")[0] for r in role_requirements(REPO, "runtime")}
    assert {"onnxruntime", "cryptography", "pydantic"} <= serving and "torch" not in serving
    assert {"torch", "kfp", "feast", "mlflow", "onnx", "evidently", "shap", "onnxruntime"} <= runtime


def test_recording_an_image_replaces_only_its_registry_and_role(tmp_path: Path) -> None:
    def image(registry: str, role: str, digest: str) -> RecordedImage:
        return RecordedImage(registry, role, f"mlspec-{role}", "t", digest, "sha256:1", 1, "s")

    write_record(tmp_path, [image("a.io/ml", "runtime", "sha256:a1"), image("a.io/ml", "serving", "sha256:a2")])
    write_record(tmp_path, [image("b.io/ml", "runtime", "sha256:b1"), image("a.io/ml", "runtime", "sha256:a3")])
    found = {(i.registry, i.role): i.digest for i in read_record(tmp_path)}
    assert found == {("a.io/ml", "runtime"): "sha256:a3", ("a.io/ml", "serving"): "sha256:a2",
                     ("b.io/ml", "runtime"): "sha256:b1"}  # fmt: skip
