"""Gates and metrics of the training runtime: messages name the metric and the margin."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.metrics import check_gate, check_gates, compute_metric, higher_is_better
from mlspec.runtime.model import GpuUnavailableError, choose_device, split_index


def test_failed_gate_names_the_metric_and_the_margin() -> None:
    result = check_gate("recall", ">= 0.6", 0.52)
    assert not result.passed
    assert result.message == "recall 0.5200 < 0.6 (short by 0.0800)"
    over = check_gate("logloss", "<= 0.3", 0.45)
    assert not over.passed and over.message == "logloss 0.4500 > 0.3 (over by 0.1500)"
    assert check_gate("auc", ">= 0.85", 0.9).passed


def test_gate_on_an_undefined_or_missing_metric_fails() -> None:
    undefined = check_gate("auc", ">= 0.5", math.nan)
    assert not undefined.passed and undefined.value is None and "undefined" in undefined.message
    (missing,) = check_gates({"f1": ">= 0.5"}, {"auc": 0.9})
    assert not missing.passed and "f1 was not computed" in missing.message


def test_metrics_match_their_definitions() -> None:
    y = np.array([0, 0, 1, 1], dtype=np.float32)
    scores = np.array([0.1, 0.6, 0.4, 0.9], dtype=np.float32)
    assert compute_metric("auc", "binary_classification", y, scores) == 0.75
    assert compute_metric("accuracy", "binary_classification", y, scores) == 0.5
    assert compute_metric("recall", "binary_classification", y, scores) == 0.5
    assert compute_metric("rmse", "regression", np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 1.0
    with pytest.raises(ValueError, match="for regression"):
        compute_metric("rmse", "binary_classification", y, scores)
    assert not higher_is_better("logloss") and higher_is_better("auc")


def test_time_split_holds_out_the_latest_fraction() -> None:
    assert split_index(100, 0.2) == 80
    with pytest.raises(ValueError, match="too few"):
        split_index(1, 0.5)


def test_gpu_without_fallback_is_a_clear_error() -> None:
    spec = {"metadata": {"name": "p"}, "spec": {"resources": {"gpu": {"type": "nvidia-h100", "fallback": "none"}}}}
    ctx = RuntimeContext("local", "/p", "/p/d", "/p/f", "sqlite:///x.db", "file:///x", device="cpu")
    with pytest.raises(GpuUnavailableError, match="requires a GPU"):
        choose_device(spec, ctx)
    spec["spec"]["resources"]["gpu"]["fallback"] = "cpu"
    assert choose_device(spec, ctx) == "cpu"
    assert choose_device({"metadata": {"name": "p"}, "spec": {}}, ctx) == "cpu"
