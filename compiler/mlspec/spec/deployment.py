"""Deployment: how a registered model is served, rolled out, monitored and protected.

Three modes, each its own model: ``online`` (an endpoint with rollouts, the default),
``batch`` (a scheduled scoring pipeline that writes predictions to a sink) and ``edge``
(a signed package to run on devices). ``Deployment.spec`` is their union, chosen by
``mode``: narrow it with ``isinstance(d.spec, BatchDeploymentSpec)``. A section of
another mode is an error that names the mode it belongs to.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, JsonValue, Tag, model_validator

from mlspec.spec.base import (
    Cpu,
    Cron,
    Duration,
    FieldError,
    FieldName,
    Fraction,
    KmsRef,
    Memory,
    Metadata,
    Name,
    Percent,
    SecretRef,
    StrictModel,
)
from mlspec.spec.training import Gpu


class ModelRef(StrictModel):
    """The registered model to serve: by alias (recommended) or by pinned version."""

    name: Name = Field(description="Registered model name (a TrainingPipeline's model).")
    alias: Name | None = Field(
        default="champion",
        description=("Model alias to serve, like 'champion'; the version it points to is resolved at apply."),
    )
    version: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="A pinned model version; when set it is served instead of the alias."
    )


class Runtime(StrictModel):
    """Model format and the hardware it runs on."""

    format: Literal["onnx"] = Field(default="onnx", description="Model file format; onnx is the only one.")
    device: Literal["cpu", "gpu"] = Field(default="cpu", description="Hardware the model runs on: cpu or gpu.")
    gpu: Gpu | None = Field(default=None, description="GPU count and type; only with device: gpu.")
    fallback: Literal["cpu", "none"] = Field(default="cpu", description="Device to use when no GPU is present.")
    cpu: Cpu = Field(default=1, description="CPU per replica or job, like 2 or '500m'.")
    memory: Memory = Field(default="1Gi", description="Memory per replica or job, like '1Gi'.")
    batching: bool = Field(default=True, description="Dynamic batching of concurrent requests.")

    @model_validator(mode="after")
    def _gpu_consistent(self) -> Runtime:
        if self.gpu is not None and self.device != "gpu":
            raise FieldError("gpu", "runtime.gpu is set but runtime.device is 'cpu'; set device: gpu or drop gpu")
        return self


class ScalingTarget(StrictModel):
    """Autoscaling signal."""

    metric: Literal["concurrency", "rps", "cpu", "memory"] = Field(
        default="concurrency", description="Signal the autoscaler follows: concurrency, rps, cpu or memory."
    )
    value: Annotated[int, Field(ge=1)] = Field(default=10, description="Target value of the metric per replica.")


class Scaling(StrictModel):
    """Replica bounds and autoscaling."""

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=1, description="Fewest replicas (0 allows scaling to zero)."
    )
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=1, description="Most replicas; at least min_replicas."
    )
    target: ScalingTarget = Field(default_factory=ScalingTarget, description="Autoscaling signal and its target value.")

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise FieldError(
                "min_replicas", f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self


class Analysis(StrictModel):
    """Thresholds a new model must hold before it gets more traffic."""

    max_error_rate: Fraction = Field(
        default=0.01, description="Largest share of failed requests (0 to 1) the new model may have."
    )
    max_p99_ms: Annotated[float, Field(gt=0)] = Field(
        default=100.0, description="Largest 99th percentile latency in milliseconds."
    )
    min_requests: Annotated[int, Field(ge=1)] = Field(
        default=100, description="Requests the new model must have answered before it is judged."
    )
    interval: Duration = Field(default="5m", description="How long each step is watched before the next, like '5m'.")


class DirectRollout(StrictModel):
    """Replace the serving model at once."""

    strategy: Literal["direct"] = Field(description="direct: the new model replaces the old one at once.")


class CanaryRollout(StrictModel):
    """Shift traffic to the new model in steps, with automatic rollback."""

    strategy: Literal["canary"] = Field(description="canary: traffic moves to the new model in steps.")
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(min_length=1, description="Traffic percentages.")
    analysis: Analysis = Field(
        default_factory=Analysis, description="Thresholds checked at each step; a failure rolls back."
    )

    @model_validator(mode="after")
    def _increasing(self) -> CanaryRollout:
        for index, (before, after) in enumerate(zip(self.steps, self.steps[1:], strict=False), start=1):
            if after <= before:
                raise FieldError(("steps", index), f"canary steps must increase, but {after} follows {before}")
        return self


class Variant(StrictModel):
    """One arm of an A/B test."""

    alias: Name = Field(description="Model alias this arm serves.")
    weight: Percent = Field(description="Percentage of traffic for this arm; the weights add up to 100.")


class AbRollout(StrictModel):
    """Split traffic between model aliases, sticky by a request key."""

    strategy: Literal["ab"] = Field(description="ab: traffic split between model aliases.")
    variants: list[Variant] = Field(min_length=2, description="The arms of the test, two or more.")
    sticky_key: FieldName | None = Field(default=None, description="Request field that keeps a caller on one arm.")
    analysis: Analysis = Field(default_factory=Analysis, description="Thresholds every arm must hold.")

    @model_validator(mode="after")
    def _weights(self) -> AbRollout:
        total = sum(v.weight for v in self.variants)
        if total != 100:
            raise FieldError("variants", f"A/B variant weights must add up to 100, not {total}")
        aliases = [v.alias for v in self.variants]
        if len(set(aliases)) != len(aliases):
            raise FieldError("variants", "A/B variants must name different aliases")
        return self


class ShadowRollout(StrictModel):
    """Mirror traffic to a challenger; answer from the champion; compare outputs."""

    strategy: Literal["shadow"] = Field(
        description="shadow: requests are mirrored to a challenger; only the champion answers."
    )
    challenger: Name = Field(default="challenger", description="Model alias that receives the mirrored requests.")
    sample: Annotated[int, Field(ge=1, le=100)] = Field(
        default=100, description="Percentage of requests mirrored to the challenger."
    )
    analysis: Analysis = Field(default_factory=Analysis, description="Thresholds the challenger must hold.")


class BlueGreenRollout(StrictModel):
    """Bring up the new model beside the old one, then switch all traffic."""

    strategy: Literal["blue_green"] = Field(
        description=("blue_green: the new model comes up beside the old one, then takes all traffic.")
    )
    analysis: Analysis = Field(
        default_factory=Analysis, description="Thresholds the new model must hold before the switch."
    )
    auto_promote: bool = Field(
        default=True,
        description="Switch all traffic to green once it loaded and passed a smoke inference (false is refused: "
        "holding green for a manual promotion is not built).",
    )


Rollout = Annotated[
    DirectRollout | CanaryRollout | AbRollout | ShadowRollout | BlueGreenRollout,
    Field(discriminator="strategy"),
]


class Drift(StrictModel):
    """Input drift detection."""

    method: Literal["psi", "ks", "wasserstein", "jensenshannon", "chisquare", "kl_div"] = Field(
        default="psi", description="Statistical test that compares live inputs with the training data."
    )
    threshold: Annotated[float, Field(gt=0)] = Field(
        default=0.2, description="Score above which a feature counts as drifted."
    )
    action: Literal["alert", "retrain", "none"] = Field(
        default="none",
        description="What drift leads to: none (reported by `mlspec monitor`, which exits 1), retrain (train and "
        "roll out again) or alert (refused until alerting is built).",
    )
    schedule: Duration = Field(default="1h", description="How often drift is computed, like '1h'.")
    sample_rate: Fraction = Field(default=0.1, description="Share of requests (0 to 1) kept for drift detection.")
    features: list[FieldName] | None = Field(default=None, description="Omit to watch every input feature.")


class Monitoring(StrictModel):
    """What is watched once the model serves."""

    drift: Drift | None = Field(default=None, description="Input drift detection; omit to turn it off.")
    log_requests: bool = Field(default=True, description="Keep a sample of requests and answers (sealed at rest).")


OpenRoute = Literal["health", "metrics", "metadata"]
DEFAULT_OPEN_ROUTES: tuple[OpenRoute, ...] = ("health", "metrics")


class Auth(StrictModel):
    """Who may call the endpoint."""

    required: bool = Field(default=True, description="Whether callers must authenticate.")
    method: Literal["oidc", "api_key", "mtls", "none"] = Field(
        default="oidc", description="How callers authenticate: oidc, api_key, mtls or none."
    )
    audiences: list[str] = Field(
        default_factory=list,
        description="OIDC: the audiences this endpoint accepts; a token must carry one of them ('aud'). "
        "Omit to accept any audience of the environment's issuer.",
    )
    api_keys: SecretRef | None = Field(
        default=None,
        description="api_key: the secret holding the accepted keys, one per line; on a local environment omit it "
        "and mlspec creates a key (shown by mlspec status).",
    )
    open_routes: list[OpenRoute] = Field(
        default_factory=lambda: list(DEFAULT_OPEN_ROUTES),
        description="Routes served without credentials: health (probes), metrics (Prometheus scrapes), metadata.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Auth:
        if self.required and self.method == "none":
            raise FieldError("method", "auth.required is true but auth.method is 'none'")
        if self.api_keys is not None and self.method != "api_key":
            raise FieldError("api_keys", f"auth.api_keys is set but auth.method is {self.method!r}, not api_key")
        if self.audiences and self.method != "oidc":
            raise FieldError("audiences", f"auth.audiences is set but auth.method is {self.method!r}, not oidc")
        return self


class Endpoint(StrictModel):
    """How the endpoint is exposed."""

    visibility: Literal["private", "internal", "public"] = Field(
        default="internal", description="Who can reach the endpoint: private, internal (the cluster) or public."
    )
    tls: bool = Field(default=True, description="Serve over TLS.")
    path: Annotated[str, Field(pattern=r"^/[-a-z0-9/]*$")] | None = Field(
        default=None, description="URL path of the endpoint, like '/fraud'; omit for the default."
    )


class BatchSink(StrictModel):
    """Where predictions go: a parquet folder (local) or a table reference (a warehouse a team environment owns)."""

    path: str | None = Field(
        default=None, description=("Parquet folder, relative to the environment's data folder (like 'predictions/x').")
    )
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")] | None = Field(
        default=None, description=("A table reference like 'analytics.ml.churn_scores', written by the cluster's job.")
    )
    connection: SecretRef | None = Field(
        default=None, description="PostgreSQL connection URL of a table sink, as a reference (never the value)."
    )

    @model_validator(mode="after")
    def _one_sink(self) -> BatchSink:
        if (self.path is None) == (self.table is None):
            raise FieldError("path", "a batch sink needs exactly one of 'path' (parquet) or 'table'")
        if self.table is not None and self.connection is None:
            raise FieldError("table", "a table sink needs a 'connection' secret reference (like 'secret://team/dwh')")
        if self.path is not None and self.connection is not None:
            raise FieldError("connection", "'connection' applies to table sinks; a path sink writes parquet files")
        if self.path is not None and (self.path.startswith("/") or ".." in self.path.split("/")):
            raise FieldError("path", f"sink path '{self.path}' must stay inside the data folder (relative, no '..')")
        return self


class Batch(StrictModel):
    """Scheduled scoring: features for every entity of a source, scored in chunks, written to a sink."""

    entities: Name = Field(description="DataSource whose rows are the entities to score (their keys).")
    sink: BatchSink = Field(description="Where the predictions are written: a parquet path or a table.")
    schedule: Cron | None = Field(default=None, description="Cron schedule; omit to score on apply and on demand.")
    chunk_size: Annotated[int, Field(ge=1, le=10_000_000)] = Field(default=10_000, description="Rows scored per chunk.")

    @model_validator(mode="after")
    def _cron(self) -> Batch:
        from mlspec.cron import CronError, parse  # the matcher `mlspec monitor` runs the schedule with

        if self.schedule is not None:
            try:
                parse(self.schedule)
            except CronError as exc:
                raise FieldError("schedule", str(exc)) from None
        return self


class Edge(StrictModel):
    """A package for devices: the ONNX model (optionally int8), its schema, digests and a signature."""

    quantize: Literal["none", "int8"] = Field(
        default="none",
        description=(
            "'int8' quantizes the model's weights for smaller, faster packages; 'none' ships the model as trained."
        ),
    )
    max_accuracy_drop: Fraction = Field(
        default=0.01, description=("Largest loss of the gate metric the quantized model may show on the test split.")
    )
    signing_key: KmsRef | None = Field(
        default=None,
        description=("Ed25519 private key that signs the manifest; omit for '<environment key>.ed25519' (file://)."),
    )


DeploymentMode = Literal["online", "batch", "edge"]
ONLINE_ONLY = ("rollout", "scaling", "auth", "endpoint", "monitoring", "missing_entities")
MODE_SECTIONS = ("batch", "edge")


def _misplaced(mode: DeploymentMode) -> dict[str, str]:
    """Messages for the sections that belong to another mode (spec/errors.py shows them at the section)."""
    messages = {
        section: f"'{section}' is set but mode is '{mode}'; set mode: {section}"
        for section in MODE_SECTIONS
        if section != mode
    }
    if mode != "online":
        messages.update(
            {section: f"'{section}' applies to online deployments, not mode: {mode}" for section in ONLINE_ONLY}
        )
    return messages


class DeploymentSpecBase(StrictModel):
    """What every mode shares: the model, its features and the hardware it runs on."""

    model: ModelRef = Field(description="The registered model to use, by alias or pinned version.")
    features: Name | None = Field(
        default=None, description=("FeatureService whose features the model reads; defaults to its TrainingPipeline's.")
    )
    runtime: Runtime = Field(default_factory=Runtime, description="Model format and the CPU, memory or GPU it runs on.")

    _other_modes: ClassVar[dict[str, str]] = {}

    @classmethod
    def misplaced(cls, field: str) -> str | None:
        """Why ``field`` belongs to another mode, or None; spec/errors.py shows it instead of "unknown field"."""
        return cls._other_modes.get(field)


class OnlineDeploymentSpec(DeploymentSpecBase):
    """An endpoint that answers requests, rolled out, scaled, monitored and protected."""

    _other_modes: ClassVar[dict[str, str]] = _misplaced("online")

    mode: Literal["online"] = Field(
        default="online",
        description=(
            "online (the default): an endpoint; batch: scheduled scoring; edge: a signed package for devices."
        ),
    )
    scaling: Scaling = Field(default_factory=Scaling, description="Replica bounds and autoscaling of the endpoint.")
    rollout: Rollout = Field(
        default_factory=lambda: DirectRollout(strategy="direct"),
        description=("How a new model version takes over traffic: direct, canary, ab, shadow or blue_green."),
    )
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Request logging and input drift detection.")
    auth: Auth = Field(default_factory=Auth, description="Who may call the endpoint.")
    endpoint: Endpoint = Field(default_factory=Endpoint, description="Visibility, TLS and path of the endpoint.")
    missing_entities: Literal["error", "impute"] = Field(
        default="error",
        description="What an entity-keyed request gets when the online store lacks an entity's features (or holds them "
        "past their ttl): error (404 naming each row and key, nothing scored) or impute (the model fills them with "
        "the training split's means, as it does for any missing value).",
    )


class BatchDeploymentSpec(DeploymentSpecBase):
    """A scoring job: every entity of a source scored and written to a sink, on a schedule or on demand."""

    _other_modes: ClassVar[dict[str, str]] = _misplaced("batch")

    mode: Literal["batch"] = Field(
        description="batch: score every entity of a source and write the predictions to a sink."
    )
    batch: Batch = Field(description="Which entities to score, where the predictions go and when.")


class EdgeDeploymentSpec(DeploymentSpecBase):
    """A signed package of the model for devices."""

    _other_modes: ClassVar[dict[str, str]] = _misplaced("edge")

    mode: Literal["edge"] = Field(description="edge: build a signed package of the model to run on devices.")
    edge: Edge = Field(description="Quantization, accuracy budget and signing key of the package.")


_MODE_TAGS: dict[str, str] = {
    "online": OnlineDeploymentSpec.__name__,
    "batch": BatchDeploymentSpec.__name__,
    "edge": EdgeDeploymentSpec.__name__,
}


def _mode_tag(value: Any) -> str | None:
    """The union member for a ``spec`` by its ``mode``; a missing mode means online.

    Tags are the class names, not the mode values: a tag equal to a key of the data
    (``batch``) would be mistaken for that key when errors are located.
    """
    if isinstance(value, DeploymentSpecBase):
        return type(value).__name__
    if not isinstance(value, dict):
        return OnlineDeploymentSpec.__name__  # reported as "must be a mapping"
    mode = value.get("mode", "online")
    return _MODE_TAGS.get(mode) if isinstance(mode, str) else None


DeploymentSpec = Annotated[
    Annotated[OnlineDeploymentSpec, Tag(OnlineDeploymentSpec.__name__)]
    | Annotated[BatchDeploymentSpec, Tag(BatchDeploymentSpec.__name__)]
    | Annotated[EdgeDeploymentSpec, Tag(EdgeDeploymentSpec.__name__)],
    Discriminator(
        _mode_tag,
        custom_error_type="unknown_tag",
        custom_error_message="unknown mode",
        custom_error_context={"discriminator": "'mode'", "expected_tags": ", ".join(f"'{m}'" for m in _MODE_TAGS)},
    ),
]
"""One model per mode, chosen by ``mode`` (omitted: online)."""

# For editors: which branch of the schema's oneOf each ``mode`` selects (a missing mode selects online).
_SCHEMA_DISCRIMINATOR: dict[str, JsonValue] = {
    "propertyName": "mode",
    "mapping": {mode: f"#/$defs/{tag}" for mode, tag in _MODE_TAGS.items()},
}


class Deployment(StrictModel):
    """A registered model put to use: an online endpoint, a batch scoring job or an edge package."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="The spec language version: mlspec/v1.")
    kind: Literal["Deployment"] = Field(description="Deployment.")
    metadata: Metadata = Field(description="Name, owner, description and labels of the Deployment.")
    spec: DeploymentSpec = Field(
        json_schema_extra={"discriminator": _SCHEMA_DISCRIMINATOR},
        description="How the model is served: the fields depend on ``mode`` (omitted: online).",
    )

    @model_validator(mode="after")
    def _dns_1035_name(self) -> Deployment:
        """An online Deployment becomes an InferenceService and Services of its name, which Kubernetes requires
        to start with a letter (DNS-1035); refuse here what the cluster would refuse at apply."""
        if not self.metadata.name[0].isalpha():
            raise FieldError(
                ("metadata", "name"),
                f"Deployment name '{self.metadata.name}' must start with a letter: it names Kubernetes objects "
                "(InferenceService, Service), whose names follow DNS-1035",
            )
        return self
