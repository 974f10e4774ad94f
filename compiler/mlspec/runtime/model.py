"""Torch models from a TrainingPipeline spec: build, train (with optional Optuna search), save and load.

The saved model is a wrapper that takes *raw* features (float32, the feature
service's order): missing values become the training mean, inputs are standardised
with the training split's statistics, and the task head turns logits into the
served score: binary -> probability of the positive class, shape [batch];
multiclass -> class probabilities, shape [batch, classes]; regression -> the
prediction in the label's units, shape [batch].
"""

from __future__ import annotations

import importlib
import io
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.metrics import compute_metric

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
MAX_THREADS = 4


def configure_threads() -> int:
    """Torch intra-op threads: the cores this process may use, at most MAX_THREADS (small models gain nothing more)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    threads = max(1, min(cores, MAX_THREADS))
    torch.set_num_threads(threads)
    return threads


class GpuUnavailableError(RuntimeError):
    """The spec requires a GPU (``fallback: none``) and none is available."""


def choose_device(spec: dict[str, Any], ctx: RuntimeContext) -> str:
    """``cuda`` when the spec asks for a GPU, the context allows it and one is present; else ``cpu``."""
    gpu = spec["spec"].get("resources", {}).get("gpu")
    if not gpu:
        return "cpu"
    if ctx.device == "auto" and torch.cuda.is_available():
        return "cuda"
    if gpu.get("fallback", "cpu") == "none":
        why = "the runtime context forces CPU" if ctx.device == "cpu" else "torch sees no CUDA device"
        raise GpuUnavailableError(
            f"pipeline '{spec['metadata']['name']}' requires a GPU ({gpu['type']}, fallback: none) but {why}; "
            "run it where a GPU is available or set resources.gpu.fallback to cpu"
        )
    return "cpu"


def split_index(rows: int, test_fraction: float) -> int:
    """Rows are sorted by time; rows from the returned index on are the held-out test set (the latest ones)."""
    test = max(1, math.ceil(rows * test_fraction))
    if test >= rows:
        raise ValueError(f"{rows} rows are too few to hold out {test_fraction:.0%} for testing")
    return rows - test


class ScoringModel(nn.Module):
    """Raw features in, the task's score out (see the module docstring)."""

    mean: torch.Tensor
    std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    def __init__(self, net: nn.Module, task: str, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.task = task
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's raw output on raw features."""
        mean: torch.Tensor = self.mean
        std: torch.Tensor = self.std
        x = torch.where(torch.isnan(x), mean, x)
        out: torch.Tensor = self.net((x - mean) / std)
        if self.task != "multiclass_classification":
            out = out.reshape(-1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The served score."""
        out = self.logits(x)
        if self.task == "binary_classification":
            return torch.sigmoid(out)
        if self.task == "multiclass_classification":
            return torch.softmax(out, dim=-1)
        y_std: torch.Tensor = self.y_std
        y_mean: torch.Tensor = self.y_mean
        return out * y_std + y_mean


@dataclass
class Params:
    """The trainable knobs: hyperparameters plus what search may change in the architecture."""

    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float
    optimizer: str
    seed: int
    dropout: float | None = None
    hidden_width: int | None = None


@dataclass
class Dataset:
    """Features and targets as arrays, in time order."""

    x: np.ndarray
    y: np.ndarray
    classes: list[Any] = field(default_factory=list)

    def slice(self, start: int, stop: int | None = None) -> Dataset:
        """Rows [start, stop)."""
        return Dataset(self.x[start:stop], self.y[start:stop], self.classes)


def to_arrays(
    frame: pd.DataFrame, features: list[str], label: str, task: str, classes: list[Any] | None = None
) -> Dataset:
    """The feature matrix (float32, NaN where missing) and the target (class index or value)."""
    x = frame[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    raw = frame[label].to_numpy()
    if task == "regression":
        return Dataset(x, raw.astype(np.float32), [])
    if task == "binary_classification":
        values = set(np.unique(raw).tolist())
        if not values <= {0, 1}:
            raise ValueError(f"binary_classification needs a 0/1 label; '{label}' has {sorted(values)[:5]}")
        return Dataset(x, raw.astype(np.float32), [0, 1])
    classes = classes if classes is not None else sorted(np.unique(raw).tolist())
    lookup = {c: i for i, c in enumerate(classes)}
    return Dataset(x, np.array([lookup[v] for v in raw.tolist()], dtype=np.int64), classes)


def output_dim(task: str, classes: list[Any]) -> int:
    """Width of the network's last layer."""
    return len(classes) if task == "multiclass_classification" else 1


def build_network(
    architecture: dict[str, Any], params: Params, input_dim: int, out_dim: int, ctx: RuntimeContext
) -> nn.Module:
    """The spec's network: an MLP, or the user's ``module:function(input_dim, output_dim, **params)``."""
    if architecture["type"] == "mlp":
        hidden = [int(h) for h in architecture["hidden"]]
        if params.hidden_width is not None:  # search scales the layers, keeping their proportions
            hidden = [max(1, round(params.hidden_width * h / hidden[0])) for h in hidden]
        dropout = architecture.get("dropout", 0.0) if params.dropout is None else params.dropout
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[architecture.get("activation", "relu")]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, out_dim))
        return nn.Sequential(*layers)
    module_name, function_name = architecture["entrypoint"].split(":")
    if ctx.project_root not in sys.path:
        sys.path.insert(0, ctx.project_root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"custom model entrypoint '{architecture['entrypoint']}': cannot import '{module_name}' "
            f"from the project root {ctx.project_root}: {error}"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AttributeError(f"custom model entrypoint '{architecture['entrypoint']}': no function '{function_name}'")
    kwargs = dict(architecture.get("params", {}))
    if params.dropout is not None:
        kwargs["dropout"] = params.dropout
    if params.hidden_width is not None:
        kwargs["hidden_width"] = params.hidden_width
    net = function(input_dim, out_dim, **kwargs)
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"custom model entrypoint '{architecture['entrypoint']}' returned {type(net).__name__}, "
            "not a torch.nn.Module"
        )
    return net


def _normalisation(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
    mean = np.nan_to_num(mean, nan=0.0)
    filled = np.where(np.isnan(x), mean, x)
    std = filled.std(axis=0)
    std = np.where(std < 1e-12, 1.0, std)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def fit(spec: dict[str, Any], params: Params, train: Dataset, ctx: RuntimeContext, device: str) -> ScoringModel:
    """Train one model on ``train`` (seeded: the same inputs give the same weights on CPU)."""
    task = spec["spec"]["model"]["task"]
    torch.manual_seed(params.seed)
    mean, std = _normalisation(train.x)
    net = build_network(
        spec["spec"]["model"]["architecture"], params, train.x.shape[1], output_dim(task, train.classes), ctx
    )
    model = ScoringModel(net, task, mean, std)
    if task == "regression":
        model.y_mean.fill_(float(train.y.mean()))
        model.y_std.fill_(float(train.y.std()) or 1.0)
    model.to(device)
    x = torch.tensor(train.x, device=device)
    y = torch.tensor(train.y, device=device)
    if task == "regression":
        y = (y - model.y_mean) / model.y_std
    loss_fn: nn.Module
    if task == "binary_classification":
        positives = float(train.y.sum())
        balance = (len(train.y) - positives) / positives if positives else 1.0
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(balance, device=device))
    elif task == "multiclass_classification":
        loss_fn = nn.CrossEntropyLoss()
    else:
        loss_fn = nn.MSELoss()
    optimizers: dict[str, Callable[..., torch.optim.Optimizer]] = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": lambda p, lr, weight_decay: torch.optim.SGD(p, lr=lr, weight_decay=weight_decay, momentum=0.9),
    }
    optimizer = optimizers[params.optimizer](
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    generator = torch.Generator().manual_seed(params.seed)
    rows = len(x)
    model.train()
    for _ in range(params.epochs):
        order = torch.randperm(rows, generator=generator).to(device)
        for start in range(0, rows, params.batch_size):
            batch = order[start : start + params.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model.logits(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    return model.cpu()


def predict(model: ScoringModel, x: np.ndarray) -> np.ndarray:
    """Scores for raw features, on CPU."""
    with torch.no_grad():
        result: np.ndarray = model(torch.tensor(x, dtype=torch.float32)).numpy()
    return result


def _suggest(trial: Any, name: str, dimension: dict[str, Any]) -> Any:
    if "choices" in dimension:
        return trial.suggest_categorical(name, dimension["choices"])
    return trial.suggest_float(name, dimension["low"], dimension["high"], log=dimension.get("log", False))


def search(  # noqa: PLR0917
    spec: dict[str, Any], base: Params, train: Dataset, ctx: RuntimeContext, device: str, test_fraction: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Optuna over the spec's space, scored on a validation split cut from the end of ``train``; returns
    (best params, every trial)."""
    import optuna

    config = spec["spec"]["search"]
    space: dict[str, dict[str, Any]] = config["space"]
    seed = base.seed
    if config["method"] == "grid":
        ranges = [name for name, dimension in space.items() if "choices" not in dimension]
        if ranges:
            raise ValueError(
                f"grid search needs every dimension as choices; {ranges} are ranges (list the values to try, "
                "or use method: tpe or random)"
            )
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(
            {name: dimension["choices"] for name, dimension in space.items()}, seed=seed
        )
    elif config["method"] == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    cut = split_index(len(train.y), test_fraction)
    fit_part, valid = train.slice(0, cut), train.slice(cut)
    metric = config["metric"]
    task = spec["spec"]["model"]["task"]

    def objective(trial: optuna.Trial) -> float:
        values = {name: _suggest(trial, name, dimension) for name, dimension in space.items()}
        params = _with(base, values)
        model = fit(spec, params, fit_part, ctx, device)
        score = compute_metric(metric, task, valid.y, predict(model, valid.x))
        return score if math.isfinite(score) else (-math.inf if config["direction"] == "maximize" else math.inf)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=config["direction"], sampler=sampler)
    study.optimize(objective, n_trials=config["trials"])
    trials = [
        {"number": t.number, "params": dict(t.params), "value": t.value, "state": t.state.name} for t in study.trials
    ]
    return dict(study.best_params), trials


def _with(base: Params, values: dict[str, Any]) -> Params:
    params = Params(**vars(base))
    casts: dict[str, Callable[[Any], Any]] = {
        "epochs": int, "batch_size": int, "hidden_width": int, "learning_rate": float, "weight_decay": float,
        "dropout": float,
    }  # fmt: skip
    for name, value in values.items():
        setattr(params, name, casts[name](value))
    return params


def train_and_save(  # noqa: PLR0917
    spec: dict[str, Any],
    ctx: RuntimeContext,
    frame: pd.DataFrame,
    features: list[str],
    label: str,
    params: Params,
    test_fraction: float,
    model_path: str,
) -> str:
    """Search (when the spec asks), train the final model on the training split, save it; returns the device."""
    configure_threads()
    device = choose_device(spec, ctx)
    task = spec["spec"]["model"]["task"]
    data = to_arrays(frame, features, label, task)
    cut = split_index(len(data.y), test_fraction)
    train = data.slice(0, cut)  # the test rows (from cut on) are never seen here
    best: dict[str, Any] = {}
    trials: list[dict[str, Any]] = []
    if spec["spec"].get("search"):
        best, trials = search(spec, params, train, ctx, device, test_fraction)
    final = _with(params, best)
    model = fit(spec, final, train, ctx, device)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "task": task,
            "architecture": spec["spec"]["model"]["architecture"],
            "params": vars(final),
            "features": features,
            "label": label,
            "classes": data.classes,
            "test_fraction": test_fraction,
            "train_rows": cut,
            "best_params": best,
            "trials": trials,
            "search_metric": spec["spec"]["search"]["metric"] if spec["spec"].get("search") else None,
            "device": device,
            "threads": torch.get_num_threads(),
        },
        model_path,
    )
    ctx.seal(model_path, f"{spec['metadata']['name']}/train/model.pt")  # a checkpoint is a model artifact too
    return device


def load(model_path: str, spec: dict[str, Any], ctx: RuntimeContext) -> tuple[ScoringModel, dict[str, Any]]:
    """The saved model (on CPU, eval mode) and its metadata."""
    saved: dict[str, Any] = torch.load(io.BytesIO(ctx.read(model_path)), map_location="cpu", weights_only=False)
    params = Params(**saved["params"])
    features = saved["features"]
    net = build_network(saved["architecture"], params, len(features), output_dim(saved["task"], saved["classes"]), ctx)
    model = ScoringModel(net, saved["task"], torch.zeros(len(features)), torch.ones(len(features)))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, saved
