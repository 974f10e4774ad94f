"""Deployment: how a registered model is served, rolled out, monitored and protected.

Three modes: ``online`` (an endpoint with rollouts, the default), ``batch`` (a
scheduled scoring pipeline that writes predictions to a sink) and ``edge`` (a signed
package to run on devices). The online-only sections are errors in the other modes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

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
    alias: Name | None = "champion"
    version: Annotated[int, Field(ge=1)] | None = None


class Runtime(StrictModel):
    """Model format and the hardware it runs on."""

    format: Literal["onnx"] = "onnx"
    device: Literal["cpu", "gpu"] = "cpu"
    gpu: Gpu | None = None
    fallback: Literal["cpu", "none"] = Field(default="cpu", description="Device to use when no GPU is present.")
    cpu: Cpu = 1
    memory: Memory = "1Gi"
    batching: bool = Field(default=True, description="Dynamic batching of concurrent requests.")

    @model_validator(mode="after")
    def _gpu_consistent(self) -> Runtime:
        if self.gpu is not None and self.device != "gpu":
            raise FieldError("gpu", "runtime.gpu is set but runtime.device is 'cpu'; set device: gpu or drop gpu")
        return self


class ScalingTarget(StrictModel):
    """Autoscaling signal."""

    metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    value: Annotated[int, Field(ge=1)] = 10


class Scaling(StrictModel):
    """Replica bounds and autoscaling."""

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    target: ScalingTarget = Field(default_factory=ScalingTarget)

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise FieldError(
                "min_replicas", f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self


class Analysis(StrictModel):
    """Thresholds a new model must hold before it gets more traffic."""

    max_error_rate: Fraction = 0.01
    max_p99_ms: Annotated[float, Field(gt=0)] = 100.0
    min_requests: Annotated[int, Field(ge=1)] = 100
    interval: Duration = "5m"


class DirectRollout(StrictModel):
    """Replace the serving model at once."""

    strategy: Literal["direct"]


class CanaryRollout(StrictModel):
    """Shift traffic to the new model in steps, with automatic rollback."""

    strategy: Literal["canary"]
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(min_length=1, description="Traffic percentages.")
    analysis: Analysis = Field(default_factory=Analysis)

    @model_validator(mode="after")
    def _increasing(self) -> CanaryRollout:
        for index, (before, after) in enumerate(zip(self.steps, self.steps[1:], strict=False), start=1):
            if after <= before:
                raise FieldError(("steps", index), f"canary steps must increase, but {after} follows {before}")
        return self


class Variant(StrictModel):
    """One arm of an A/B test."""

    alias: Name
    weight: Percent


class AbRollout(StrictModel):
    """Split traffic between model aliases, sticky by a request key."""

    strategy: Literal["ab"]
    variants: list[Variant] = Field(min_length=2)
    sticky_key: FieldName | None = Field(default=None, description="Request field that keeps a caller on one arm.")
    analysis: Analysis = Field(default_factory=Analysis)

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

    strategy: Literal["shadow"]
    challenger: Name = "challenger"
    sample: Annotated[int, Field(ge=1, le=100)] = 100
    analysis: Analysis = Field(default_factory=Analysis)


class BlueGreenRollout(StrictModel):
    """Bring up the new model beside the old one, then switch all traffic."""

    strategy: Literal["blue_green"]
    analysis: Analysis = Field(default_factory=Analysis)
    auto_promote: bool = False


Rollout = Annotated[
    DirectRollout | CanaryRollout | AbRollout | ShadowRollout | BlueGreenRollout,
    Field(discriminator="strategy"),
]


class Drift(StrictModel):
    """Input drift detection."""

    method: Literal["psi", "ks", "wasserstein", "jensenshannon", "chisquare", "kl_div"] = "psi"
    threshold: Annotated[float, Field(gt=0)] = 0.2
    action: Literal["alert", "retrain", "none"] = "alert"
    schedule: Duration = "1h"
    sample_rate: Fraction = 0.1
    features: list[FieldName] | None = Field(default=None, description="Omit to watch every input feature.")


class Monitoring(StrictModel):
    """What is watched once the model serves."""

    drift: Drift | None = None
    log_requests: bool = True


class Auth(StrictModel):
    """Who may call the endpoint."""

    required: bool = True
    method: Literal["oidc", "api_key", "mtls", "none"] = "oidc"
    audiences: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Auth:
        if self.required and self.method == "none":
            raise FieldError("method", "auth.required is true but auth.method is 'none'")
        return self


class Endpoint(StrictModel):
    """How the endpoint is exposed."""

    visibility: Literal["private", "internal", "public"] = "internal"
    tls: bool = True
    path: Annotated[str, Field(pattern=r"^/[-a-z0-9/]*$")] | None = None


class BatchSink(StrictModel):
    """Where predictions go: a parquet folder (local) or a table reference (a warehouse a team environment owns)."""

    path: str | None = Field(
        default=None, description="Parquet folder, relative to the environment's data folder (like 'predictions/x')."
    )
    table: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")] | None = Field(
        default=None, description="A table reference like 'analytics.ml.churn_scores', written by the cluster's job."
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
    sink: BatchSink
    schedule: Cron | None = Field(default=None, description="Cron schedule; omit to score on apply and on demand.")
    chunk_size: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000

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

    quantize: Literal["none", "int8"] = "none"
    max_accuracy_drop: Fraction = Field(
        default=0.01, description="Largest loss of the gate metric the quantized model may show on the test split."
    )
    signing_key: KmsRef | None = Field(
        default=None,
        description="Ed25519 private key that signs the manifest; omit for '<environment key>.ed25519' (file://).",
    )


DeploymentMode = Literal["online", "batch", "edge"]
ONLINE_ONLY = ("rollout", "scaling", "auth", "endpoint", "monitoring")


class DeploymentSpec(StrictModel):
    """Serving of one registered model."""

    mode: DeploymentMode = Field(default="online", description="online endpoint, batch scoring, or edge package.")
    model: ModelRef
    features: Name | None = Field(
        default=None, description="FeatureService to look up online; defaults to the model's."
    )
    runtime: Runtime = Field(default_factory=Runtime)
    scaling: Scaling = Field(default_factory=Scaling)
    rollout: Rollout = Field(default_factory=lambda: DirectRollout(strategy="direct"))
    monitoring: Monitoring = Field(default_factory=Monitoring)
    auth: Auth = Field(default_factory=Auth)
    endpoint: Endpoint = Field(default_factory=Endpoint)
    batch: Batch | None = None
    edge: Edge | None = None

    @model_validator(mode="after")
    def _mode_sections(self) -> DeploymentSpec:
        for section in ("batch", "edge"):
            if getattr(self, section) is not None and self.mode != section:
                raise FieldError(section, f"'{section}' is set but mode is '{self.mode}'; set mode: {section}")
        if self.mode != "online" and getattr(self, self.mode) is None:
            raise FieldError("mode", f"mode: {self.mode} needs a '{self.mode}' section")
        if self.mode != "online":
            for section in ONLINE_ONLY:
                if section in self.model_fields_set:
                    raise FieldError(section, f"'{section}' applies to online deployments, not mode: {self.mode}")
        return self


class Deployment(StrictModel):
    """A registered model put to use: an online endpoint, a batch scoring job or an edge package."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["Deployment"]
    metadata: Metadata
    spec: DeploymentSpec
