"""TrainingPipeline: how a model is trained, evaluated, gated and registered."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Discriminator, Field, StringConstraints, Tag, model_validator

from mlspec.spec.base import Cpu, Cron, FieldError, FieldName, Fraction, Gate, Memory, Metadata, Name, StrictModel


class Label(StrictModel):
    """Where the training target comes from."""

    source: Name = Field(description="A DataSource holding the labels.")
    field: FieldName = Field(description="The label column in that source (the value the model learns to predict).")
    timestamp_field: FieldName | None = Field(
        default=None, description="Event-time column of the labels; defaults to the source's timestamp_field."
    )


class MlpArchitecture(StrictModel):
    """A multi-layer perceptron."""

    type: Literal["mlp"] = Field(description="Which architecture: mlp (built in) or custom (your code).")
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        min_length=1, description="Width of each hidden layer, input side first, e.g. [64, 32]."
    )
    dropout: Fraction = Field(default=0.0, description="Dropout probability after each hidden layer (0 to 1).")
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field(
        default="relu", description="Activation function of the hidden layers."
    )


class CustomArchitecture(StrictModel):
    """User model code: ``module.path:function`` returning a torch.nn.Module."""

    type: Literal["custom"] = Field(description="Which architecture: mlp (built in) or custom (your code).")
    entrypoint: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] = Field(
        description="package.module:function that builds the torch.nn.Module, e.g. models.fraud:build."
    )
    params: dict[str, int | float | str | bool] = Field(
        default_factory=dict, description="Keyword arguments passed to the entrypoint."
    )


class ModelSpec(StrictModel):
    """What is trained and under which name it is registered."""

    name: Name | None = Field(default=None, description="Registered model name; defaults to the pipeline name.")
    framework: Literal["torch"] = Field(
        default="torch", description="Training framework; models are exported to ONNX for serving."
    )
    task: Literal["binary_classification", "multiclass_classification", "regression"] = Field(
        description="What the model predicts; it decides the loss and which metrics apply."
    )
    architecture: Annotated[MlpArchitecture | CustomArchitecture, Field(discriminator="type")] = Field(
        description="The network: a built-in mlp, or custom code."
    )


class Hyperparameters(StrictModel):
    """Training hyperparameters."""

    epochs: Annotated[int, Field(ge=1, le=100_000)] = Field(default=10, description="Passes over the training data.")
    learning_rate: Annotated[float, Field(gt=0, le=10)] = Field(default=0.001, description="Optimizer step size.")
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(default=256, description="Rows per optimizer step.")
    weight_decay: Annotated[float, Field(ge=0)] = Field(default=0.0, description="L2 penalty on the weights.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(default="adam", description="Optimization algorithm.")
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = Field(
        default=42, description="Random seed: the same data and seed train the same model (0 to 2^63-1)."
    )


class FloatRange(StrictModel):
    """A continuous search range."""

    low: float = Field(description="Lowest value tried.")
    high: float = Field(description="Highest value tried (above low).")
    log: bool = Field(default=False, description="Sample on a log scale (for learning rates and other scales).")

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low >= self.high:
            raise FieldError("low", f"low ({self.low}) must be below high ({self.high})")
        return self


class Choice(StrictModel):
    """A categorical search dimension."""

    choices: list[int | float | str] = Field(min_length=1, description="The values tried.")


def _dimension_kind(value: object) -> str:
    # called with raw data when validating and with model instances when serialising
    return "Choice" if isinstance(value, Choice) or (isinstance(value, dict) and "choices" in value) else "FloatRange"


SearchDimension = Annotated[
    Annotated[FloatRange, Tag("FloatRange")] | Annotated[Choice, Tag("Choice")], Discriminator(_dimension_kind)
]


Metric = Literal["auc", "accuracy", "precision", "recall", "f1", "logloss", "rmse", "mae", "r2"]
# The evaluators of mlspec.runtime.metrics, by task (a unit test keeps them equal; the compiler never imports runtime/).
CLASSIFICATION_METRICS = frozenset({"auc", "accuracy", "precision", "recall", "f1", "logloss"})
REGRESSION_METRICS = frozenset({"rmse", "mae", "r2"})
METRICS: tuple[str, ...] = typing.get_args(Metric)


class Search(StrictModel):
    """Hyperparameter search: a space, a budget and an objective."""

    method: Literal["tpe", "random", "grid"] = Field(
        default="tpe", description="Search algorithm: tpe (Bayesian), random or grid."
    )
    trials: Annotated[int, Field(ge=1, le=10_000)] = Field(description="How many configurations are trained.")
    metric: Metric = Field(
        description="Validation metric the trials are ranked by; it becomes the model's primary metric."
    )
    direction: Literal["maximize", "minimize"] = Field(
        default="maximize", description="Whether a larger or a smaller metric is better."
    )
    space: dict[
        Literal["epochs", "learning_rate", "batch_size", "weight_decay", "dropout", "hidden_width"],
        SearchDimension,
    ] = Field(
        min_length=1, description="The hyperparameters searched, each a range {low, high, log} or {choices: [...]}."
    )


RetrainTrigger = Literal["drift", "schedule", "data_change", "manual"]


def _default_metrics() -> list[Metric]:
    return ["auc"]


def _default_triggers() -> list[RetrainTrigger]:
    return ["manual"]


class Evaluation(StrictModel):
    """How a trained model is judged before it may be promoted."""

    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        default=0.2, description="Share of the rows, the latest in time, held out to test the model."
    )
    metrics: list[Metric] = Field(
        default_factory=_default_metrics,
        description="Metrics computed on the test set; the first is the primary one unless a search sets it.",
    )
    gates: dict[Metric, Gate] = Field(
        default_factory=dict, description="Metric thresholds, e.g. {auc: '>= 0.85'}; failing one blocks promotion."
    )
    compare_to: Literal["champion", "none"] = Field(
        default="champion",
        description="Compare with the current champion model before promoting (champion), or not (none).",
    )
    explainability: bool = Field(default=False, description="Produce a feature-attribution report.")


class Gpu(StrictModel):
    """A GPU request."""

    type: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][-a-z0-9]*$")] = Field(
        description="Accelerator type, e.g. nvidia-h100, nvidia-a100, nvidia-l4."
    )
    count: Annotated[int, Field(ge=1, le=16)] = Field(default=1, description="How many GPUs.")
    fallback: Literal["cpu", "none"] = Field(default="cpu", description="What to do when no GPU is available.")


class Resources(StrictModel):
    """Compute for a training run."""

    cpu: Cpu = Field(default=1, description="CPU cores, e.g. 4 or '500m'.")
    memory: Memory = Field(default="2Gi", description="Memory, e.g. '8Gi'.")
    gpu: Gpu | None = Field(default=None, description="A GPU request; omit to train on CPU.")
    spot: bool = Field(default=False, description="Run on spot (preemptible) capacity where the cluster has it.")
    timeout: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*(s|m|h)$")] = Field(
        default="2h", description="Longest a training run may take, e.g. '2h'."
    )


class Registration(StrictModel):
    """How a model that passed its gates is registered."""

    alias: Name = Field(default="challenger", description="Registry alias every model that passes its gates gets.")
    promote_to: Name | None = Field(default="champion", description="Alias set when the model beats the champion.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags set on the registered model version.")


class TrainingPipelineSpec(StrictModel):
    """The whole training pipeline: features in, registered ONNX model out."""

    features: Name = Field(description="A FeatureService.")
    label: Label = Field(description="Where the training target comes from.")
    entity_source: Name | None = Field(
        default=None,
        description="DataSource with the entity keys and timestamps to train on; defaults to the label source.",
    )
    model: ModelSpec = Field(description="What is trained: task, architecture and registered name.")
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Training hyperparameters (a search overrides those it searches)."
    )
    search: Search | None = Field(
        default=None, description="Hyperparameter search; omit to train once with the hyperparameters."
    )
    evaluation: Evaluation = Field(
        default_factory=Evaluation, description="Test split, metrics and the gates a model must pass."
    )
    resources: Resources = Field(default_factory=Resources, description="Compute for a training run.")
    schedule: Cron | None = Field(
        default=None,
        description="Cron schedule (UTC) for retraining, e.g. '0 2 * * *'; omit to train on apply and on demand.",
    )
    retrain_on: list[RetrainTrigger] = Field(
        default_factory=_default_triggers, description="What starts a retraining: drift, schedule, data_change, manual."
    )
    caching: bool = Field(default=True, description="Reuse the outputs of pipeline steps whose inputs did not change.")
    registration: Registration = Field(
        default_factory=Registration, alias="register", description="How a model that passed its gates is registered."
    )

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> TrainingPipelineSpec:
        task = self.model.task
        fits = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
        kind = "a regression" if task == "regression" else "a classification"
        named: list[tuple[tuple[str | int, ...], str]] = [
            *((("evaluation", "metrics", i), m) for i, m in enumerate(self.evaluation.metrics)),
            *((("evaluation", "gates", m), m) for m in self.evaluation.gates),
        ]
        if self.search is not None:
            named.append((("search", "metric"), self.search.metric))
        for path, metric in named:
            if metric not in fits:
                default = (
                    " (the default)"
                    if path[1] == "metrics" and "metrics" not in self.evaluation.model_fields_set
                    else ""
                )
                raise FieldError(
                    path,
                    f"metric '{metric}'{default} does not apply to {kind} model (task: {task}); "
                    f"use one of {', '.join(m for m in METRICS if m in fits)}",
                )
        return self


class TrainingPipeline(StrictModel):
    """A training pipeline that produces a registered model."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["TrainingPipeline"] = Field(description="Always TrainingPipeline.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: TrainingPipelineSpec = Field(description="Features, label, model, evaluation, resources and schedule.")

    @property
    def model_name(self) -> str:
        """The registered model's name."""
        return self.spec.model.name or self.metadata.name
