"""Evaluation metrics and gates.

Scores are what the exported model outputs: a probability (binary), class
probabilities (multiclass) or a value (regression). Binary decisions use 0.5;
multiclass precision, recall and f1 are macro averages.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LOWER_IS_BETTER = frozenset({"logloss", "rmse", "mae"})
CLASSIFICATION = frozenset({"auc", "accuracy", "precision", "recall", "f1", "logloss"})
REGRESSION = frozenset({"rmse", "mae", "r2"})
_GATE = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": math.isclose,
}  # fmt: skip
_FAILED_AS = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of the metric is a better model."""
    return metric not in LOWER_IS_BETTER


def compute_metric(metric: str, task: str, y: np.ndarray, scores: np.ndarray) -> float:
    """One metric of scores against targets; NaN where it is undefined (e.g. AUC with one class present)."""
    from sklearn import metrics as sk

    regression = task == "regression"
    if regression and metric in CLASSIFICATION:
        raise ValueError(f"metric '{metric}' is for classification; this model is a regression")
    if not regression and metric in REGRESSION:
        raise ValueError(f"metric '{metric}' is for regression; this model is a classifier")
    if metric == "rmse":
        return float(np.sqrt(sk.mean_squared_error(y, scores)))
    if metric == "mae":
        return float(sk.mean_absolute_error(y, scores))
    if metric == "r2":
        return float(sk.r2_score(y, scores))
    multiclass = task == "multiclass_classification"
    labels = np.arange(scores.shape[1]) if multiclass else np.array([0, 1])
    predicted = scores.argmax(axis=1) if multiclass else (scores >= 0.5).astype(np.int64)
    truth = y.astype(np.int64)
    average = "macro" if multiclass else "binary"
    if metric == "auc":
        if len(np.unique(truth)) < 2:
            return math.nan
        if multiclass:
            return float(sk.roc_auc_score(truth, scores, multi_class="ovr", labels=labels))
        return float(sk.roc_auc_score(truth, scores))
    if metric == "accuracy":
        return float(sk.accuracy_score(truth, predicted))
    if metric == "precision":
        return float(sk.precision_score(truth, predicted, average=average, labels=labels, zero_division=0))
    if metric == "recall":
        return float(sk.recall_score(truth, predicted, average=average, labels=labels, zero_division=0))
    if metric == "f1":
        return float(sk.f1_score(truth, predicted, average=average, labels=labels, zero_division=0))
    if metric == "logloss":
        probabilities = scores if multiclass else np.column_stack([1 - scores, scores])
        return float(sk.log_loss(truth, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=labels))
    raise ValueError(f"unknown metric '{metric}'")


@dataclass(frozen=True)
class GateResult:
    """One gate, checked."""

    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def parse_gate(text: str) -> tuple[str, float]:
    """``">= 0.85"`` -> (">=", 0.85)."""
    match = _GATE.match(text)
    if not match:
        raise ValueError(f"not a gate: {text!r} (expected a comparison like '>= 0.85')")
    return match.group(1), float(match.group(2))


def check_gate(metric: str, gate: str, value: float) -> GateResult:
    """Whether ``value`` passes the gate; a failure says by how much it missed."""
    op, threshold = parse_gate(gate)
    if not math.isfinite(value):
        message = f"{metric} is undefined on the test set (e.g. only one class present), gate {op} {threshold:g}"
        return GateResult(metric, op, threshold, None, False, message)
    passed = _OPS[op](value, threshold)
    if passed:
        return GateResult(metric, op, threshold, value, True, f"{metric} {value:.4f} {op} {threshold:g}")
    gap = abs(value - threshold)
    how = {">=": "short by", ">": "short by", "<=": "over by", "<": "over by", "==": "off by"}[op]
    message = f"{metric} {value:.4f} {_FAILED_AS[op]} {threshold:g} ({how} {gap:.4f})"
    return GateResult(metric, op, threshold, value, False, message)


def check_gates(gates: dict[str, str], metrics: dict[str, float]) -> list[GateResult]:
    """Every gate against the computed metrics (a gate on a metric that was not computed fails)."""
    results = []
    for metric, gate in gates.items():
        if metric not in metrics:
            op, threshold = parse_gate(gate)
            message = f"{metric} was not computed, so gate {op} {threshold:g} cannot pass"
            results.append(GateResult(metric, op, threshold, None, False, message))
        else:
            results.append(check_gate(metric, gate, metrics[metric]))
    return results
