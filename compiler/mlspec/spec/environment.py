"""Environment: where the platform runs, under which rules, with which overrides."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from mlspec.spec.access import Access, HttpUrlText, WaiverRules
from mlspec.spec.base import (
    Cron,
    Duration,
    FieldError,
    KmsRef,
    Metadata,
    Name,
    Region,
    ResourceRef,
    SecretRef,
    StrictModel,
)


class DataResidency(StrictModel):
    """Where data and everything derived from it may be stored and processed."""

    jurisdiction: Literal["AE", "SA", "QA", "BH", "KW", "OM", "EU", "US", "GLOBAL"] = Field(
        default="AE", description="Legal jurisdiction whose data rules apply (AE: United Arab Emirates)."
    )
    allowed_regions: list[Region] = Field(
        min_length=1,
        description=(
            "Regions where data of this environment may be stored and processed; residency policies deny others."
        ),
    )


class EnvironmentEncryption(StrictModel):
    """Keys and transport security for everything the environment stores or serves."""

    kms_key: KmsRef | None = Field(
        default=None,
        description=(
            "Key that encrypts the environment's stores, models and request logs (kms://..., or file://... locally)."
        ),
    )
    signing_key: KmsRef | None = Field(
        default=None,
        description="Ed25519 key that signs edge packages (kms:// through a signing provider, or file://); "
        "omit for '<kms_key>.ed25519' when kms_key is a file.",
    )
    tls: Literal["required", "preferred", "disabled"] = Field(
        default="required", description="Transport security of the endpoints and stores."
    )


HttpsUrl = Annotated[str, StringConstraints(pattern=r"^https://[^\s/?#@]+(/[^\s?#]*)?$")]


class Identity(StrictModel):
    """The OpenID Connect provider whose tokens this environment's OIDC endpoints accept."""

    issuer: HttpsUrl = Field(
        description="The issuer URL, exactly as tokens carry it in 'iss' (e.g. Entra ID's "
        "'https://login.microsoftonline.com/<tenant>/v2.0')."
    )
    jwks_uri: HttpsUrl | None = Field(
        default=None,
        description="Where the issuer publishes its signing keys; omit to find it in the issuer's "
        "/.well-known/openid-configuration.",
    )


# Argo CD's name for the cluster it runs in.
IN_CLUSTER = "https://kubernetes.default.svc"
ArgoCluster = Annotated[str, StringConstraints(pattern=r"^(https://\S+|[A-Za-z0-9]([-A-Za-z0-9._@:]*[A-Za-z0-9])?)$")]


class KubernetesTarget(StrictModel):
    """The cluster an environment deploys to."""

    namespace: Name = Field(description="Kubernetes namespace the environment's resources are created in.")
    context: str | None = Field(default=None, description="kubeconfig context to use; omit for the current one.")
    cluster: ArgoCluster | None = Field(
        default=None,
        description="The cluster Argo CD deploys to: its Argo CD cluster name (as `argocd cluster add` registered "
        "it) or its API server URL (https://...). Omitted: the cluster named like `context`, or Argo CD's own "
        "cluster (https://kubernetes.default.svc) when there is no context.",
    )
    image_pull_secret: SecretRef | None = Field(
        default=None, description="Reference to the secret that pulls images from a private registry."
    )
    serving_mode: Literal["serverless", "raw"] = Field(
        default="serverless", description="KServe deployment mode: serverless (Knative, canary) or raw (Deployments)."
    )
    prometheus: HttpUrlText = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="The Prometheus that scrapes the environment's model servers (through the rendered PodMonitor, "
        "which it must select); mlspec's rollout controller judges canaries from it. An in-cluster URL "
        "(<service>.<namespace>.svc) opens only that namespace in the NetworkPolicies.",
    )

    def argocd_destination(self) -> dict[str, str]:
        """Argo CD's ``destination`` for this cluster: ``server`` for an API server URL, else ``name``."""
        cluster = self.cluster or self.context or IN_CLUSTER
        key = "server" if cluster.startswith("https://") else "name"
        return {key: cluster, "namespace": self.namespace}


class FeatureStoreTarget(StrictModel):
    """Feast stores for the environment."""

    registry: Literal["file", "sql"] = Field(
        default="file", description="Feast registry: a file, or a SQL database shared by every machine."
    )
    online: Literal["sqlite", "redis", "postgres"] = Field(
        default="sqlite", description="Online store serving the latest feature values."
    )
    offline: Literal["file", "duckdb", "postgres"] = Field(
        default="file", description="Offline store used for training data (point-in-time joins)."
    )
    materialize: Cron = Field(
        default="@hourly",
        description="When a cluster environment's materialization CronJob loads the latest feature values into the "
        "online store (cron, UTC); a local apply materializes on every change instead.",
    )
    connection: SecretRef | None = Field(
        default=None,
        description=(
            "Connection for sql/redis/postgres stores; its keys arrive as MLSPEC_SECRET_<REF>_REGISTRY_URL, _REDIS, "
            "_PG_HOST, _PG_PORT, _PG_DATABASE, _PG_USER, _PG_PASSWORD (see docs/team-stores.md)."
        ),
    )

    @model_validator(mode="after")
    def _connection_needed(self) -> FeatureStoreTarget:
        needs = self.registry == "sql" or self.online != "sqlite" or self.offline == "postgres"
        if needs and self.connection is None:
            raise FieldError(
                "connection",
                "shared feature stores (sql registry, redis/postgres) need a 'connection' secret reference",
            )
        return self


ARTIFACT_URI_PATTERN = (
    r"^(azure://[a-z0-9]{3,24}/[a-z0-9][a-z0-9-]{1,61}[a-z0-9](/\S*)?"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|(gs|pvc|https|file)://\S+)$"
)


class ArtifactStore(StrictModel):
    """The object store holding the environment's MLflow artifacts and its registered models."""

    uri: Annotated[str, StringConstraints(pattern=ARTIFACT_URI_PATTERN)] = Field(
        description="azure://<account>/<container>[/<prefix>] (Azure Blob), s3://<bucket>[/<prefix>], gs://, pvc:// "
        "or file://; MLflow's artifact root and the models' version layout live under it."
    )
    region: Region | None = Field(
        default=None,
        description="Region the store's data lives in (like uae-north); residency policies deny one outside "
        "data_residency.allowed_regions, and an undeclared one for a remote store on staging and production.",
    )
    credentials: SecretRef | None = Field(
        default=None,
        description="Reference to the store's credentials (secret://, env:// or k8s://) holding an Azure account key, "
        "SAS token or connection string, or for S3 '<access key id>:<secret access key>'; omit for workload identity.",
    )


def _artifact_store_schema(schema: dict[str, Any]) -> None:
    """The shorthand (a bare URI string) is accepted too."""
    schema.setdefault("anyOf", []).insert(0, {"type": "string", "pattern": ARTIFACT_URI_PATTERN})


class RegistryTarget(StrictModel):
    """Experiment tracking and model registry."""

    type: Literal["mlflow"] = Field(default="mlflow", description="Registry engine: mlflow.")
    tracking_uri: str | None = Field(
        default=None,
        description=(
            "Omit for an embedded SQLite store. A tracking server (https://...), a credential-free store URL, or a "
            "reference resolved at run time: env://MLFLOW_TRACKING_URI, secret://prod/mlflow or k8s://name/key "
            "(e.g. holding postgresql+psycopg://user:password@host:5432/mlflow)."
        ),
    )
    artifact_store: ArtifactStore | None = Field(
        default=None,
        description="Where MLflow artifacts and registered models live: {uri, region, credentials}, or just the URI "
        "(like azure://uaebankmlprod/models); needed for kserve serving and kubeflow pipelines.",
        json_schema_extra=_artifact_store_schema,
    )

    @field_validator("artifact_store", mode="before")
    @classmethod
    def _uri_shorthand(cls, value: Any) -> Any:
        return {"uri": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _no_credentials_in_tracking_uri(self) -> RegistryTarget:
        import re

        uri = self.tracking_uri
        if uri is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", uri):
            raise FieldError(
                "tracking_uri",
                "tracking_uri carries a password; put the URL in a secret and reference it "
                "(env://MLFLOW_TRACKING_URI or secret://<environment>/mlflow)",
            )
        return self


class GitOpsTarget(StrictModel):
    """Hand-off of rendered manifests to a cluster's GitOps engine."""

    type: Literal["argocd"] = Field(default="argocd", description="GitOps engine: argocd.")
    repo_url: str = Field(description="Git repository Argo CD reads the rendered manifests from.")
    path: str = Field(default="rendered", description="Folder in that repository.")
    revision: str = Field(default="main", description="Branch, tag or commit Argo CD follows.")
    project: Name = Field(default="default", description="Argo CD project the Applications belong to.")


class ImagesTarget(StrictModel):
    """Where the environment's container images come from."""

    registry: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.:-]*(/[a-z0-9._-]+)*$")] = Field(
        description="Registry (and path) holding the images `mlspec image build --push` pushed, like "
        "registry.example.com/ml; renders name images there by the digest images.lock.json records."
    )


class Targets(StrictModel):
    """Which engine plays each part of the platform in this environment."""

    kubernetes: KubernetesTarget | None = Field(
        default=None, description="The cluster; needed for kubeflow pipelines and kserve serving."
    )
    pipelines: Literal["local", "kubeflow"] = Field(
        default="local", description="Where training pipelines run: in-process (local) or on Kubeflow Pipelines."
    )
    serving: Literal["local", "kserve"] = Field(
        default="local", description="Where models are served: local model servers or KServe."
    )
    registry: RegistryTarget = Field(
        default_factory=RegistryTarget, description="Experiment tracking and model registry."
    )
    feature_store: FeatureStoreTarget = Field(
        default_factory=FeatureStoreTarget, description="Feast registry, online and offline stores."
    )
    gitops: GitOpsTarget | None = Field(
        default=None, description="Hand rendered manifests to Argo CD instead of applying them directly."
    )
    images: ImagesTarget | None = Field(
        default=None, description="The container registry cluster resources pull the runtime and serving images from."
    )

    @model_validator(mode="after")
    def _cluster_needed(self) -> Targets:
        if self.serving == "kserve" and self.registry.artifact_store is None:
            raise FieldError(
                ("registry", "artifact_store"), "kserve serving needs registry.artifact_store (where models are stored)"
            )
        if self.pipelines == "kubeflow" and self.registry.artifact_store is None:
            raise FieldError(
                ("registry", "artifact_store"),
                "kubeflow pipelines need registry.artifact_store (where MLflow artifacts and registered models are "
                "written), like {uri: azure://<account>/<container>, region: uae-north}",
            )
        if (self.pipelines == "kubeflow" or self.serving == "kserve") and self.kubernetes is None:
            raise FieldError(
                "serving" if self.serving == "kserve" else "pipelines",
                "kubeflow pipelines and kserve serving need targets.kubernetes (namespace)",
            )
        return self


class Override(StrictModel):
    """A patch merged onto one resource's spec in this environment only."""

    target: ResourceRef = Field(description="The resource patched, like Deployment/fraud-api.")
    patch: dict[str, Any] = Field(
        min_length=1,
        description="JSON merge patch applied to the resource, like {spec: {scaling: {min_replicas: 3}}}.",
    )


class Promotion(StrictModel):
    """Where changes come from and what must happen before they land."""

    from_: Name = Field(alias="from", description="The environment changes are promoted from, like staging.")
    requires_approval: bool = Field(default=True, description="A promotion needs a recorded approval.")


GpgFingerprint = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-F]{40}$"),
    Field(description="A GPG key fingerprint: 40 upper-case hex digits, no spaces (gpg --list-keys --with-colons)."),
]


class Reconcile(StrictModel):
    """How the pull-based reconciler (mlspec reconcile) keeps this environment equal to its branch."""

    interval: Duration = Field(default="60s", description="How often the branch is fetched and drift is checked.")
    self_heal: bool | None = Field(
        default=None,
        description="Repair drift by applying again (true), or only report it (false). "
        "Default: true, except on the production tier, where drift is reported and repaired by a person.",
    )
    require_signed_commits: bool = Field(
        default=False, description="Apply only commits whose GPG signature verifies against a trusted key."
    )
    trusted_keys: list[GpgFingerprint] = Field(
        default_factory=list, description="Fingerprints of the keys whose signed commits may be applied."
    )

    @model_validator(mode="after")
    def _keys_needed(self) -> Reconcile:
        if self.require_signed_commits and not self.trusted_keys:
            raise FieldError("trusted_keys", "require_signed_commits needs at least one trusted key fingerprint")
        if len(set(self.trusted_keys)) != len(self.trusted_keys):
            raise FieldError("trusted_keys", "a trusted key is listed twice")
        return self


class EnvironmentSpec(StrictModel):
    """One place the platform runs."""

    tier: Literal["local", "development", "staging", "production"] = Field(
        description="Kind of environment; policies are stricter on higher tiers."
    )
    region: Region = Field(description="Region the environment runs in; must be one of data_residency.allowed_regions.")
    data_residency: DataResidency = Field(description="Where data may be stored and processed.")
    encryption: EnvironmentEncryption = Field(
        default_factory=EnvironmentEncryption, description="Keys and transport security."
    )
    targets: Targets = Field(default_factory=Targets, description="Which engine plays each part of the platform here.")
    overrides: list[Override] = Field(
        default_factory=list, description="Patches to resources in this environment only."
    )
    promotion: Promotion | None = Field(
        default=None, description="Where changes are promoted from and whether they need approval."
    )
    data_dir: str | None = Field(default=None, description="Where local stores live; defaults to .mlspec/<env>.")
    reconcile: Reconcile = Field(
        default_factory=Reconcile, description="How mlspec reconcile keeps the environment equal to its branch."
    )
    access: Access | None = Field(
        default=None, description="Who may plan and apply, and the approval changes need; omitted: everyone."
    )
    identity: Identity | None = Field(
        default=None,
        description="The OIDC issuer whose tokens endpoints with auth.method: oidc accept; omit on a local "
        "environment for mlspec's own local issuer (mlspec token mints its tokens).",
    )
    waivers: WaiverRules = Field(
        default_factory=WaiverRules,
        description="How long a waiver may run here. Outside the local tier a waiver also counts only when its "
        "approved_by is an approver of access.approval (signed_commit) whose key signed the commit that last "
        "changed its file.",
    )

    @property
    def self_heals(self) -> bool:
        """Whether the reconciler repairs drift: the explicit setting, else every tier but production."""
        if self.reconcile.self_heal is not None:
            return self.reconcile.self_heal
        return self.tier != "production"

    @model_validator(mode="after")
    def _region_allowed(self) -> EnvironmentSpec:
        if self.region not in self.data_residency.allowed_regions:
            raise FieldError(
                "region",
                f"region {self.region!r} is not in data_residency.allowed_regions "
                f"{self.data_residency.allowed_regions}",
            )
        return self


class Environment(StrictModel):
    """An environment: local, dev, staging, prod."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["Environment"] = Field(description="Always Environment.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: EnvironmentSpec = Field(description="Tier, region, residency, targets, overrides and access.")
