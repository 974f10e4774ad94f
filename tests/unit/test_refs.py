"""References between specs: dangling names, duplicates, feature fields, and no cascades."""

from __future__ import annotations

from pathlib import Path

from mlspec.app.validation import validate_files
from tests.conftest import MINIMAL, minimal_platform, write_files


def validate_text(tmp_path: Path, files: dict[str, str]):  # type: ignore[no-untyped-def]
    write_files(tmp_path, files)
    return validate_files(sorted(tmp_path.rglob("*.yaml")))


def test_minimal_platform_resolves(tmp_path: Path) -> None:
    result = validate_text(tmp_path, {"all.yaml": minimal_platform()})
    assert result.ok and result.diagnostics == ()
    assert len(result.specs) == len(MINIMAL)


def test_dangling_reference_points_at_the_value_and_suggests(tmp_path: Path) -> None:
    text = minimal_platform().replace("  source: txns\n", "  source: txn\n")
    result = validate_text(tmp_path, {"all.yaml": text})
    (d,) = result.diagnostics
    assert d.code == "unknown-reference" and d.path == "spec.source"
    assert d.hint == "did you mean 'txns'?"
    line = text.splitlines()[d.location.line - 1]
    assert line[d.location.column - 1 :].startswith("txn")


def test_references_across_files(tmp_path: Path) -> None:
    parts = minimal_platform().split("---\n")
    result = validate_text(tmp_path, {f"specs/{i}.yaml": part for i, part in enumerate(parts)})
    assert result.ok and len(result.specs) == len(parts)


def test_every_reference_kind_is_checked(tmp_path: Path) -> None:
    text = (
        minimal_platform()
        .replace("entities: [customer]", "entities: [client]")
        .replace("features: [{view: stats}]", "features: [{view: statz}]")
        .replace("features: fraud-features", "features: fraud-feats")
        .replace("label: {source: txns", "label: {source: labels")
        .replace("model: {name: fraud-detector}", "model: {name: fraud-model}")
        .replace("resources: [DataSource/txns]", "resources: [DataSource/gone]")
    )
    result = validate_text(tmp_path, {"all.yaml": text})
    paths = sorted(d.path for d in result.diagnostics)
    assert paths == sorted(
        [
            "spec.entities[0]",
            "spec.features[0].view",
            "spec.features",
            "spec.label.source",
            "spec.model.name",
            "spec.resources[0]",
        ]
    )
    assert {d.code for d in result.diagnostics} == {"unknown-reference"}


def test_environment_overrides_and_promotion_are_checked(tmp_path: Path) -> None:
    env_extra = "  overrides: [{target: Deployment/ghost, patch: {spec: {}}}]\n  promotion: {from: staging}\n"
    text = minimal_platform().replace(
        "allowed_regions: [uae-north, uae-central]}\n", "allowed_regions: [uae-north, uae-central]}\n" + env_extra
    )
    result = validate_text(tmp_path, {"all.yaml": text})
    assert sorted(d.path for d in result.diagnostics) == ["spec.overrides[0].target", "spec.promotion.from"]


def test_duplicate_names_name_both_places(tmp_path: Path) -> None:
    entity = MINIMAL["Entity"]
    result = validate_text(tmp_path, {"a.yaml": entity, "b/c.yaml": entity})
    (d,) = result.diagnostics
    assert d.code == "duplicate-name"
    assert d.location.file.endswith("c.yaml") and d.related[0].file.endswith("a.yaml")
    assert "a.yaml:3:" in d.message


def test_same_name_in_different_kinds_is_fine(tmp_path: Path) -> None:
    text = (
        minimal_platform()
        .replace("metadata: {name: customer}", "metadata: {name: txns}")
        .replace("entities: [customer]", "entities: [txns]")
    )
    assert validate_text(tmp_path, {"all.yaml": text}).ok


def test_feature_service_fields_must_exist_in_the_view(tmp_path: Path) -> None:
    text = minimal_platform().replace("[{view: stats}]", "[{view: stats, fields: [txn_count, txn_mean]}]")
    result = validate_text(tmp_path, {"all.yaml": text})
    (d,) = result.diagnostics
    assert d.path == "spec.features[0].fields[1]" and d.hint == "did you mean 'txn_avg'?"


def test_invalid_spec_does_not_cascade_into_reference_errors(tmp_path: Path) -> None:
    text = minimal_platform().replace("ttl: 7d", "ttl: a week")
    result = validate_text(tmp_path, {"all.yaml": text})
    assert [d.path for d in result.diagnostics] == ["spec.ttl"]


def test_model_reference_uses_the_registered_model_name(tmp_path: Path) -> None:
    text = minimal_platform().replace(
        "    task: binary_classification\n", "    name: card-fraud\n    task: binary_classification\n"
    )
    result = validate_text(tmp_path, {"all.yaml": text})
    assert [d.path for d in result.diagnostics] == ["spec.model.name"]
    fixed = text.replace("model: {name: fraud-detector}", "model: {name: card-fraud}")
    assert validate_text(tmp_path, {"all.yaml": fixed}).ok
