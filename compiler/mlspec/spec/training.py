"""TrainingPipeline: how a model is trained, evaluated, gated and registered."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, StringConstraints, Tag, model_validator

from mlspec.spec.base import Cpu, Cron, FieldError, FieldName, Fraction, Gate, Memory, Metadata, Name, StrictModel


class Label(StrictModel):
    """Where the training target comes from."""

    source: Name = Field(description="A DataSource holding the labels.")
    field: FieldName
    timestamp_field: FieldName | None = None


class MlpArchitecture(StrictModel):
    """A multi-layer perceptron."""

    type: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(min_length=1)
    dropout: Fraction = 0.0
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"


class CustomArchitecture(StrictModel):
    """User model code: ``module.path:function`` returning a torch.nn.Module."""

    type: Literal["custom"]
    entrypoint: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    params: dict[str, int | float | str | bool] = Field(default_factory=dict)


class ModelSpec(StrictModel):
    """What is trained and under which name it is registered."""

    name: Name | None = Field(default=None, description="Registered model name; defaults to the pipeline name.")
    framework: Literal["torch"] = "torch"
    task: Literal["binary_classification", "multiclass_classification", "regression"]
    architecture: Annotated[MlpArchitecture | CustomArchitecture, Field(discriminator="type")]


class Hyperparameters(StrictModel):
    """Training hyperparameters."""

    epochs: Annotated[int, Field(ge=1, le=100_000)] = 10
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.001
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    seed: int = 42


class FloatRange(StrictModel):
    """A continuous search range."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low >= self.high:
            raise FieldError("low", f"low ({self.low}) must be below high ({self.high})")
        return self


class Choice(StrictModel):
    """A categorical search dimension."""

    choices: list[int | float | str] = Field(min_length=1)


def _dimension_kind(value: object) -> str:
    # called with raw data when validating and with model instances when serialising
    return "Choice" if isinstance(value, Choice) or (isinstance(value, dict) and "choices" in value) else "FloatRange"


SearchDimension = Annotated[
    Annotated[FloatRange, Tag("FloatRange")] | Annotated[Choice, Tag("Choice")], Discriminator(_dimension_kind)
]


class Search(StrictModel):
    """Hyperparameter search: a space, a budget and an objective."""

    method: Literal["tpe", "random", "grid"] = "tpe"
    trials: Annotated[int, Field(ge=1, le=10_000)]
    metric: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")]
    direction: Literal["maximize", "minimize"] = "maximize"
    space: dict[
        Literal["epochs", "learning_rate", "batch_size", "weight_decay", "dropout", "hidden_width"],
        SearchDimension,
    ] = Field(min_length=1)


Metric = Literal["auc", "accuracy", "precision", "recall", "f1", "logloss", "rmse", "mae", "r2"]
RetrainTrigger = Literal["drift", "schedule", "data_change", "manual"]


def _default_metrics() -> list[Metric]:
    return ["auc"]


def _default_triggers() -> list[RetrainTrigger]:
    return ["manual"]


class Evaluation(StrictModel):
    """How a trained model is judged before it may be promoted."""

    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    metrics: list[Metric] = Field(default_factory=_default_metrics)
    gates: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")], Gate] = Field(
        default_factory=dict, description="Metric thresholds, e.g. {auc: '>= 0.85'}; failing one blocks promotion."
    )
    compare_to: Literal["champion", "none"] = "champion"
    explainability: bool = Field(default=False, description="Produce a feature-attribution report.")


class Gpu(StrictModel):
    """A GPU request."""

    type: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][-a-z0-9]*$")] = Field(
        description="Accelerator type, e.g. nvidia-h100, nvidia-a100, nvidia-l4."
    )
    count: Annotated[int, Field(ge=1, le=16)] = 1
    fallback: Literal["cpu", "none"] = Field(default="cpu", description="What to do when no GPU is available.")


class Resources(StrictModel):
    """Compute for a training run."""

    cpu: Cpu = 1
    memory: Memory = "2Gi"
    gpu: Gpu | None = None
    spot: bool = False
    timeout: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(s|m|h)$")] = "2h"


class Registration(StrictModel):
    """How a model that passed its gates is registered."""

    alias: Name = "challenger"
    promote_to: Name | None = Field(default="champion", description="Alias set when the model beats the champion.")
    tags: dict[str, str] = Field(default_factory=dict)


class TrainingPipelineSpec(StrictModel):
    """The whole training pipeline: features in, registered ONNX model out."""

    features: Name = Field(description="A FeatureService.")
    label: Label
    entity_source: Name | None = Field(
        default=None,
        description="DataSource with the entity keys and timestamps to train on; defaults to the label source.",
    )
    model: ModelSpec
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    search: Search | None = None
    evaluation: Evaluation = Field(default_factory=Evaluation)
    resources: Resources = Field(default_factory=Resources)
    schedule: Cron | None = None
    retrain_on: list[RetrainTrigger] = Field(default_factory=_default_triggers)
    caching: bool = True
    registration: Registration = Field(default_factory=Registration, alias="register")


class TrainingPipeline(StrictModel):
    """A training pipeline that produces a registered model."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["TrainingPipeline"]
    metadata: Metadata
    spec: TrainingPipelineSpec

    @property
    def model_name(self) -> str:
        """The registered model's name."""
        return self.spec.model.name or self.metadata.name
