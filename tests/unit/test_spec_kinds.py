"""Every kind: the minimal valid spec passes, and each kind's typical mistakes are caught where they are."""

from __future__ import annotations

import textwrap

import pytest

from mlspec.spec import Deployment, Environment, TrainingPipeline, Waiver
from mlspec.spec.base import duration_seconds
from tests.conftest import MINIMAL, parse


def codes(text: str) -> list[tuple[str, int, int]]:
    _, diags = parse(text)
    return [(d.code, d.location.line, d.location.column) for d in diags]


def spec_with(kind: str, old: str, new: str) -> str:
    base = textwrap.dedent(MINIMAL[kind]).lstrip("\n")
    assert old in base, f"{old!r} not in the {kind} template"
    return base.replace(old, new)


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_minimal_spec_of_every_kind_is_valid(kind: str) -> None:
    specs, diags = parse(MINIMAL[kind])
    assert diags == []
    assert [s.kind for s in specs] == [kind]


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_every_kind_refuses_unknown_fields_with_a_suggestion(kind: str) -> None:
    text = spec_with(kind, "metadata: {name: ", "metadata: {ownr: team-a, name: ")
    _, diags = parse(text)
    assert [(d.code, d.hint) for d in diags] == [("unknown-field", "did you mean 'owner'?")]
    assert diags[0].location.line == 3


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_every_kind_needs_spec(kind: str) -> None:
    text = textwrap.dedent(MINIMAL[kind]).lstrip("\n").split("spec:")[0]
    _, diags = parse(text)
    assert [(d.code, d.path) for d in diags] == [("missing-field", "spec")]


# DataSource
def test_datasource_variants() -> None:
    pg = spec_with(
        "DataSource",
        "  type: file\n  path: data/txns.parquet\n",
        "  type: postgres\n  connection: secret://payments/db\n  table: txns\n",
    )
    kafka = spec_with(
        "DataSource", "  type: file\n  path: data/txns.parquet\n",
        "  type: kafka\n  bootstrap_servers: kafka:9092\n  topic: txns\n",
    )  # fmt: skip
    for text in (pg, kafka):
        specs, diags = parse(text)
        assert diags == [] and specs[0].model.spec.type in {"postgres", "kafka"}  # type: ignore[attr-defined]


def test_datasource_fields_of_other_variants_are_unknown() -> None:
    text = spec_with("DataSource", "  path: data/txns.parquet\n", "  path: data/txns.parquet\n  topic: txns\n")
    assert codes(text) == [("unknown-field", 7, 3)]


def test_datasource_secret_values_are_refused() -> None:
    text = spec_with(
        "DataSource", "  type: file\n  path: data/txns.parquet\n",
        "  type: postgres\n  connection: postgresql://admin:s3cret@db/bank\n",
    )  # fmt: skip
    _, diags = parse(text)
    assert [d.code for d in diags] == ["invalid-value"]
    assert "never the secret value" in diags[0].message


def test_datasource_classification_is_an_enum() -> None:
    _, diags = parse(spec_with("DataSource", "classification: pii", "classification: PII"))
    assert diags[0].hint == "did you mean 'pii'?"


def test_datasource_kms_key_must_be_a_reference() -> None:
    assert codes(spec_with("DataSource", "kms_key: kms://payments", "kms_key: abc123"))[0][0] == "invalid-value"


# Entity
def test_entity_join_keys_need_at_least_one() -> None:
    assert codes(spec_with("Entity", "join_keys: [customer_id]", "join_keys: []")) == [("out-of-range", 4, 19)]


# FeatureView
def test_featureview_ttl_and_dtypes() -> None:
    assert codes(spec_with("FeatureView", "ttl: 7d", "ttl: 0d")) == [("invalid-value", 7, 8)]
    assert codes(spec_with("FeatureView", "dtype: int64}", "dtype: integer}")) == [("invalid-value", 9, 32)]


def test_featureview_feature_names_are_unique() -> None:
    text = spec_with("FeatureView", "{name: txn_avg, dtype: float32}", "{name: txn_count, dtype: float32}")
    _, diags = parse(text)
    assert [d.code for d in diags] == ["invalid-value"] and "declared twice" in diags[0].message


# TrainingPipeline
def test_training_gpu_spot_schedule_and_gates() -> None:
    text = spec_with(
        "TrainingPipeline", "    architecture: {type: mlp, hidden: [16]}\n",
        "    architecture: {type: mlp, hidden: [16]}\n"
        "  resources: {cpu: 4, memory: 8Gi, gpu: {type: nvidia-h100, count: 2, fallback: cpu}, spot: true}\n"
        "  schedule: '0 2 * * *'\n  retrain_on: [drift, schedule]\n"
        "  evaluation: {gates: {auc: '>= 0.85'}, compare_to: champion}\n"
        "  search: {trials: 4, metric: auc, space: {learning_rate: {low: 0.0001, high: 0.1, log: true}, hidden_width: {choices: [16, 32]}}}\n",
    )  # fmt: skip
    specs, diags = parse(text)
    assert diags == []
    model = specs[0].model
    assert isinstance(model, TrainingPipeline)
    assert model.spec.resources.gpu is not None and model.spec.resources.gpu.count == 2
    assert model.spec.search is not None and set(model.spec.search.space) == {"learning_rate", "hidden_width"}
    assert model.model_name == "fraud-detector"


def test_training_custom_architecture_needs_module_colon_function() -> None:
    ok = spec_with("TrainingPipeline", "{type: mlp, hidden: [16]}", "{type: custom, entrypoint: 'models.fraud:build'}")
    bad = spec_with("TrainingPipeline", "{type: mlp, hidden: [16]}", "{type: custom, entrypoint: models/fraud.py}")
    assert parse(ok)[1] == []
    assert [d.path for d in parse(bad)[1]] == ["spec.model.architecture.entrypoint"]


def test_training_search_range_must_be_ordered() -> None:
    text = spec_with(
        "TrainingPipeline", "    architecture: {type: mlp, hidden: [16]}\n",
        "    architecture: {type: mlp, hidden: [16]}\n  search: {trials: 2, metric: auc, space: {learning_rate: {low: 1, high: 0.1}}}\n",
    )  # fmt: skip
    _, diags = parse(text)
    assert [d.code for d in diags] == ["invalid-value"] and "must be below high" in diags[0].message


def test_training_unknown_architecture_type_suggests() -> None:
    _, diags = parse(spec_with("TrainingPipeline", "type: mlp", "type: mpl"))
    assert [(d.code, d.hint) for d in diags] == [("invalid-value", "did you mean 'mlp'?")]


def test_training_register_alias_field_is_spelled_register() -> None:
    text = spec_with(
        "TrainingPipeline",
        "    architecture: {type: mlp, hidden: [16]}\n",
        "    architecture: {type: mlp, hidden: [16]}\n  register: {alias: challenger}\n",
    )
    specs, diags = parse(text)
    assert diags == [] and specs[0].model.spec.registration.alias == "challenger"  # type: ignore[attr-defined]


# Deployment
@pytest.mark.parametrize(
    ("rollout", "strategy"),
    [
        ("{strategy: direct}", "direct"),
        ("{strategy: canary, steps: [5, 25, 100], analysis: {max_error_rate: 0.01, max_p99_ms: 40}}", "canary"),
        (
            "{strategy: ab, variants: [{alias: champion, weight: 50}, {alias: challenger, weight: 50}], sticky_key: customer_id}",
            "ab",
        ),
        ("{strategy: shadow, challenger: challenger, sample: 20}", "shadow"),
        ("{strategy: blue_green, auto_promote: true}", "blue_green"),
    ],
)
def test_deployment_rollout_strategies(rollout: str, strategy: str) -> None:
    specs, diags = parse(spec_with("Deployment", "{strategy: canary, steps: [10, 50, 100]}", rollout))
    assert diags == []
    model = specs[0].model
    assert isinstance(model, Deployment) and model.spec.rollout.strategy == strategy


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ("{strategy: canary, steps: [50, 20]}", "must increase"),
        ("{strategy: canary, steps: []}", "at least 1"),
        ("{strategy: ab, variants: [{alias: champion, weight: 60}, {alias: challenger, weight: 30}]}", "add up to 100"),
        (
            "{strategy: ab, variants: [{alias: champion, weight: 50}, {alias: champion, weight: 50}]}",
            "different aliases",
        ),
        ("{strategy: shadow, sample: 0}", "at least 1"),
        ("{steps: [10]}", "missing required field 'strategy'"),
    ],
)
def test_deployment_rollout_mistakes(rollout: str, message: str) -> None:
    _, diags = parse(spec_with("Deployment", "{strategy: canary, steps: [10, 50, 100]}", rollout))
    assert len(diags) == 1 and message in diags[0].message
    assert diags[0].location.line == 6


def test_deployment_runtime_scaling_auth_monitoring() -> None:
    extra = (
        "  runtime: {device: gpu, gpu: {type: nvidia-l4}, fallback: cpu}\n"
        "  scaling: {min_replicas: 2, max_replicas: 8, target: {metric: rps, value: 100}}\n"
        "  auth: {required: true, method: mtls}\n"
        "  monitoring: {drift: {method: psi, threshold: 0.2, action: retrain}}\n"
    )
    specs, diags = parse(textwrap.dedent(MINIMAL["Deployment"]).lstrip("\n") + extra)
    assert diags == []
    model = specs[0].model
    assert isinstance(model, Deployment)
    assert model.spec.runtime.fallback == "cpu" and model.spec.monitoring.drift is not None
    assert model.spec.monitoring.drift.action == "retrain"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("  scaling: {min_replicas: 5, max_replicas: 2}\n", "spec.scaling.min_replicas"),
        ("  auth: {required: true, method: none}\n", "spec.auth.method"),
        ("  runtime: {device: cpu, gpu: {type: nvidia-l4}}\n", "spec.runtime.gpu"),
        ("  monitoring: {drift: {method: psi, threshold: 0}}\n", "spec.monitoring.drift.threshold"),
        ("  endpoint: {visibility: internet}\n", "spec.endpoint.visibility"),
    ],
)
def test_deployment_cross_field_checks(extra: str, path: str) -> None:
    _, diags = parse(textwrap.dedent(MINIMAL["Deployment"]).lstrip("\n") + extra)
    assert [d.path for d in diags] == [path]


# Environment
def test_environment_targets_and_overrides() -> None:
    extra = (
        "  targets:\n    kubernetes: {namespace: ml-prod}\n    pipelines: kubeflow\n    serving: kserve\n"
        "    registry: {artifact_store: s3://models}\n"
        "    feature_store: {registry: sql, online: redis, connection: secret://prod/feast}\n"
        "  overrides:\n    - {target: Deployment/fraud-api, patch: {spec: {scaling: {min_replicas: 4}}}}\n"
        "  promotion: {from: staging}\n"
    )
    specs, diags = parse(textwrap.dedent(MINIMAL["Environment"]).lstrip("\n") + extra)
    assert diags == []
    model = specs[0].model
    assert isinstance(model, Environment)
    assert model.spec.promotion is not None and model.spec.promotion.from_ == "staging"
    assert model.spec.overrides[0].target == "Deployment/fraud-api"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  targets: {serving: kserve, registry: {artifact_store: s3://models}}\n", "need targets.kubernetes"),
        ("  targets: {serving: kserve, kubernetes: {namespace: ml}}\n", "needs registry.artifact_store"),
        ("  targets: {pipelines: kubeflow, kubernetes: {namespace: ml}}\n", "need registry.artifact_store"),
        ("  targets: {registry: {artifact_store: {uri: 's3://models', region: uae-north, key: x}}}\n", "key"),
        ("  targets: {registry: {artifact_store: {uri: 's3://models', credentials: 'hunter2'}}}\n", "secret reference"),
        ("  targets: {feature_store: {online: redis}}\n", "'connection' secret reference"),
        ("  overrides: [{target: fraud-api, patch: {a: 1}}]\n", "resource reference like 'Deployment/fraud-api'"),
        ("  overrides: [{target: Deployment/fraud-api, patch: {}}]\n", "at least 1"),
    ],
)
def test_environment_mistakes(extra: str, message: str) -> None:
    _, diags = parse(textwrap.dedent(MINIMAL["Environment"]).lstrip("\n") + extra)
    assert len(diags) == 1 and message in diags[0].message


def test_environment_region_must_be_allowed() -> None:
    _, diags = parse(spec_with("Environment", "region: uae-north", "region: eu-west-1"))
    assert len(diags) == 1 and "not in data_residency.allowed_regions" in diags[0].message


# Waiver
def test_waiver_expiry_is_a_date() -> None:
    specs, _ = parse(MINIMAL["Waiver"])
    model = specs[0].model
    assert isinstance(model, Waiver) and model.spec.expires.isoformat() == "2027-03-31"
    _, diags = parse(spec_with("Waiver", "expires: 2027-03-31", "expires: next year"))
    assert [d.path for d in diags] == ["spec.expires"]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("reason: migration ML-123 moves this table to uae-north", "reason: because", "spec.reason"),
        ("policy: residency.region", "policy: Residency", "spec.policy"),
        ("resources: [DataSource/txns]", "resources: [txns]", "spec.resources[0]"),
        ("  approved_by: ciso\n", "", "spec.approved_by"),
    ],
)
def test_waiver_mistakes(old: str, new: str, path: str) -> None:
    _, diags = parse(spec_with("Waiver", old, new))
    assert [d.path for d in diags] == [path]


def test_durations_convert_to_seconds() -> None:
    assert [duration_seconds(v) for v in ("30s", "15m", "12h", "7d", "2w")] == [30, 900, 43200, 604800, 1209600]
    with pytest.raises(ValueError):
        duration_seconds("7 days")
