"""Renders name the runtime image by the digest images.lock.json records, install nothing at start, and refuse
to render a cluster's pipelines when no image is recorded for the environment's registry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from mlspec.app.project import Project
from mlspec.render.images import RECORD_FILE, image_reference, read_record
from tests.conftest import CliResult, copy_platform

REGISTRY = "registry.test/ml"


def _record(root: Path, registry: str) -> dict[str, str]:
    """Write a record with both roles for ``registry``; role -> the digest it names."""
    digests = {"runtime": "sha256:" + "a" * 64, "serving": "sha256:" + "b" * 64}
    entries = [
        {"registry": registry, "role": role, "name": f"mlspec-{role}", "tag": "t1", "digest": found,
         "image_id": "sha256:" + "c" * 64, "size": 1, "sbom": f"images/sbom/mlspec-{role}.cdx.json"}
        for role, found in digests.items()
    ]  # fmt: skip
    (root / RECORD_FILE).write_text(json.dumps({"images": entries}))
    return digests


def _use_registry(root: Path, registry: str) -> None:
    prod = root / "environments" / "prod.yaml"
    text = prod.read_text()
    current = next(line for line in text.splitlines() if "images: {registry:" in line)
    prod.write_text(text.replace(current, f"    images: {{registry: {registry}}}"))


def test_every_step_of_every_pipeline_runs_the_recorded_image_and_installs_nothing(tmp_path: Path) -> None:
    copy_platform(tmp_path)
    _use_registry(tmp_path, REGISTRY)
    digests = _record(tmp_path, REGISTRY)
    project = Project.open(tmp_path)
    _, result = project.render("prod", ["kfp"])
    assert result is not None and result.ok, result and result.diagnostics
    pipelines = {a.path: a.content for a in result.artifacts if a.path.endswith(".yaml")}
    assert "kfp/fraud-detector.yaml" in pipelines and any(p.startswith("kfp/batch/") for p in pipelines)
    expected = f"{REGISTRY}/mlspec-runtime@{digests['runtime']}"
    for path, content in pipelines.items():
        ir = next(yaml.safe_load_all(content))
        executors = ir["deploymentSpec"]["executors"]
        assert executors, path
        for name, executor in executors.items():
            container = executor["container"]
            assert container["image"] == expected, (path, name)
            assert "pip install" not in " ".join(container["command"]), (path, name)
    resolution = project.resolve("prod", project.validate())
    assert resolution.graph is not None
    serving = image_reference(resolution.graph, "serving", tmp_path)
    assert serving == f"{REGISTRY}/mlspec-serving@{digests['serving']}"


def test_a_cluster_without_a_recorded_image_is_refused_at_its_registry(tmp_path: Path) -> None:
    copy_platform(tmp_path)
    _use_registry(tmp_path, "registry.other/ml")
    _record(tmp_path, REGISTRY)
    _, result = Project.open(tmp_path).render("prod", ["kfp"])
    assert result is not None and not result.ok
    [problem] = [d for d in result.diagnostics if d.code == "image-not-built"]
    assert problem.location.file.endswith("prod.yaml") and problem.path == "spec.targets.images.registry"
    line = (tmp_path / "environments" / "prod.yaml").read_text().splitlines()[problem.location.line - 1]
    assert "registry.other/ml" in line
    assert "mlspec image build --push registry.other/ml" in problem.hint
    assert not [a for a in result.artifacts if a.path.startswith("kfp/")]


def test_a_cluster_that_names_no_registry_is_told_to_name_one(tmp_path: Path) -> None:
    copy_platform(tmp_path)
    prod = tmp_path / "environments" / "prod.yaml"
    prod.write_text("\n".join(line for line in prod.read_text().splitlines() if "images: {registry:" not in line))
    _, result = Project.open(tmp_path).render("prod", ["kfp"])
    assert result is not None and not result.ok
    [problem] = [d for d in result.diagnostics if d.code == "image-not-built"]
    assert problem.path == "spec.targets.pipelines" and "targets.images.registry" in problem.hint


def test_the_reference_platform_record_names_both_images_of_its_registry() -> None:
    from tests.conftest import REPO

    records = read_record(REPO)
    registries = {line.split("registry:")[1].strip(" }") for line in _images_lines(REPO)}
    for registry in registries:
        roles = {r.role for r in records if r.registry == registry}
        assert roles == {"runtime", "serving"}, registry
        assert all(r.digest.startswith("sha256:") and len(r.digest) == 71 for r in records)


def _images_lines(root: Path) -> list[str]:
    return [
        line
        for path in sorted((root / "environments").glob("*.yaml"))
        for line in path.read_text().splitlines()
        if "images: {registry:" in line
    ]


def test_state_records_the_image_each_resource_runs(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    copy_platform(root)
    git = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "platform"]):
        subprocess.run([*git, *args], cwd=root, check=True, capture_output=True)
    applied = cli("apply", "--env", "dev", "--auto-approve", "-C", str(root))
    assert applied.code == 0, applied.out + applied.err
    [runtime] = [i.reference for i in read_record(root) if i.role == "runtime"]
    store = Project.open(root).state_store()
    try:
        resources = store.read("dev").resources
    finally:
        store.close()
    assert resources["TrainingPipeline/fraud-detector"].target_ids["images"] == runtime
    assert resources["Deployment/churn-batch"].target_ids["images"] == runtime  # its batch scoring pipeline
    assert "images" not in resources["FeatureView/customer-txn-stats"].target_ids
