"""Generate a large, valid mlspec repository for benchmarks: N spec files plus four environments.

Every tenth file group forms one small ML product (sources, entity, views, service,
pipeline, deployment) whose references all resolve, so validation does its full work.
"""

from __future__ import annotations

from pathlib import Path

PROJECT = """apiVersion: mlspec/v1
kind: Project
metadata: {name: bench, owner: platform}
spec: {specs: [specs], environments: environments}
"""

SOURCE = """apiVersion: mlspec/v1
kind: DataSource
metadata: {{name: src-{g}-{i}, owner: team-{g}, description: Source {i} of product {g}}}
spec:
  type: file
  path: s3://bench-features-uae/p{g}/source_{i}.parquet  # object storage: clusters never read the checkout
  timestamp_field: event_ts
  region: uae-north
  classification: {cls}
  encryption: {{at_rest: true, kms_key: kms://team-{g}}}
  schema:
    - {{name: entity_{g}_id, dtype: int64}}
    - {{name: event_ts, dtype: unix_timestamp}}
    - {{name: f_{i}_a, dtype: float32}}
    - {{name: f_{i}_b, dtype: int64}}
    - {{name: label, dtype: int64}}
"""

ENTITY = """apiVersion: mlspec/v1
kind: Entity
metadata: {{name: entity-{g}, owner: team-{g}}}
spec: {{join_keys: [entity_{g}_id], value_type: int64, description: Entity of product {g}}}
"""

VIEW = """apiVersion: mlspec/v1
kind: FeatureView
metadata: {{name: view-{g}-{i}, owner: team-{g}}}
spec:
  entities: [entity-{g}]
  source: src-{g}-{s}
  ttl: 7d
  online: true
  features:
    - {{name: f_{s}_a, dtype: float32, description: First feature}}
    - {{name: f_{s}_b, dtype: int64}}
  tags: {{product: p{g}}}
"""

SERVICE = """apiVersion: mlspec/v1
kind: FeatureService
metadata: {{name: service-{g}, owner: team-{g}}}
spec:
  features:
    - view: view-{g}-0
    - view: view-{g}-1
      fields: [f_1_a]
    - view: view-{g}-2
"""

PIPELINE = """apiVersion: mlspec/v1
kind: TrainingPipeline
metadata: {{name: model-{g}, owner: team-{g}}}
spec:
  features: service-{g}
  label: {{source: src-{g}-0, field: label}}
  model:
    task: binary_classification
    architecture: {{type: mlp, hidden: [64, 32], dropout: 0.1}}
  hyperparameters: {{epochs: 10, learning_rate: 0.001, batch_size: 256}}
  evaluation:
    metrics: [auc, f1]
    gates: {{auc: ">= 0.8"}}
    explainability: true
  resources: {{cpu: 4, memory: 8Gi, gpu: {{type: nvidia-l4, count: 1, fallback: cpu}}}}
  schedule: "0 2 * * *"
"""

DEPLOYMENT = """apiVersion: mlspec/v1
kind: Deployment
metadata: {{name: api-{g}, owner: team-{g}}}
spec:
  model: {{name: model-{g}, alias: champion}}
  features: service-{g}
  runtime: {{format: onnx, device: cpu, cpu: 1, memory: 1Gi}}
  scaling: {{min_replicas: 2, max_replicas: 6}}
  rollout:
    strategy: canary
    steps: [10, 50, 100]
    analysis: {{max_error_rate: 0.01, max_p99_ms: 50}}
  monitoring:
    drift: {{method: psi, threshold: 0.2, action: retrain}}
  auth: {{required: true, method: oidc}}
"""

ENVIRONMENT = """apiVersion: mlspec/v1
kind: Environment
metadata: {{name: {name}, owner: platform}}
spec:
  tier: {tier}
  region: {region}
  data_residency: {{jurisdiction: AE, allowed_regions: [{region}, uae-north, uae-central]}}
  encryption: {{kms_key: kms://{name}, tls: required}}
"""

CLUSTER_TARGETS = """  identity: {{issuer: "https://login.example.com/bank/v2.0"}}
  targets:
    kubernetes: {{namespace: ml-{name}}}
    pipelines: kubeflow
    serving: kserve
    registry: {{type: mlflow, tracking_uri: "https://mlflow.{name}.internal", artifact_store: {{uri: "s3://models-{name}", region: {region}}}}}
    feature_store: {{registry: sql, online: redis, offline: file, connection: secret://{name}/feast}}
    gitops: {{type: argocd, repo_url: "https://git.internal/ml/platform.git", path: rendered/{name}}}
"""

# One product = 10 files.
GROUP = [
    ("source", 0), ("source", 1), ("source", 2), ("entity", 0), ("view", 0),
    ("view", 1), ("view", 2), ("service", 0), ("pipeline", 0), ("deployment", 0),
]  # fmt: skip


def _render(kind: str, g: int, i: int) -> str:
    if kind == "source":
        return SOURCE.format(g=g, i=i, cls=("pii", "confidential", "internal")[i % 3])
    if kind == "entity":
        return ENTITY.format(g=g)
    if kind == "view":
        return VIEW.format(g=g, i=i, s=i)
    if kind == "service":
        return SERVICE.format(g=g)
    if kind == "pipeline":
        return PIPELINE.format(g=g)
    return DEPLOYMENT.format(g=g)


def generate_repo(root: Path, files: int) -> Path:
    """Write a project with ``files`` spec files (a multiple of 10) and 4 environments under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlspec.yaml").write_text(PROJECT)
    specs = root / "specs"
    for g in range(files // len(GROUP)):
        folder = specs / f"product-{g:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for kind, i in GROUP:
            (folder / f"{kind}-{i}.yaml").write_text(_render(kind, g, i))
    envs = root / "environments"
    envs.mkdir(exist_ok=True)
    for name, tier, region in (
        ("local", "local", "local"),  # local allows uae-north too, like the reference platform
        ("dev", "development", "uae-north"),
        ("staging", "staging", "uae-north"),
        ("prod", "production", "uae-north"),
    ):
        text = ENVIRONMENT.format(name=name, tier=tier, region=region)
        if name != "local":
            text += CLUSTER_TARGETS.format(name=name, region=region)
        (envs / f"{name}.yaml").write_text(text)
    return root
