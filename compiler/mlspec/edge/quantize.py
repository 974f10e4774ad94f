"""int8 quantization with onnxruntime's tools, the model's input/output schema, and the accuracy check.

Quantization is dynamic (``onnxruntime.quantization.quantize_dynamic``): weights are
stored as int8, activations are quantized per batch at run time, so no calibration
data is needed. The model is pre-processed first (``quant_pre_process``: ONNX shape
inference and onnxruntime's graph optimizations; symbolic shape inference is for
transformers and is skipped). The accuracy check scores the held-out test split with
the full and the quantized model and compares the pipeline's gate metrics.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.edge.errors import EdgeBuildError

if TYPE_CHECKING:
    import numpy as np

WEIGHT_TYPE = "QInt8"
METHOD = "onnxruntime.quantization.quantize_dynamic"
PRE_PROCESS_KEY = "onnx.quant.pre_process"


def _dims(value_type: Any) -> list[int | str]:
    shape = value_type.tensor_type.shape
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in shape.dim]


def describe(model_bytes: bytes) -> dict[str, Any]:
    """The model's inputs and outputs (name, dtype, shape; ``batch``-like names for dynamic axes) and its
    ``metadata_props`` (mlspec's export records ``mlspec.features`` and ``mlspec.task`` there)."""
    import onnx
    from onnx import helper

    try:
        proto = onnx.load_from_string(model_bytes)
    except Exception as exc:  # onnx raises protobuf's DecodeError and others
        raise EdgeBuildError(f"the model is not a readable ONNX file: {exc}") from None
    initializers = {i.name for i in proto.graph.initializer}

    def tensor(value: Any) -> dict[str, Any]:
        elem = value.type.tensor_type.elem_type
        return {"name": value.name, "dtype": str(helper.tensor_dtype_to_np_dtype(elem)), "shape": _dims(value.type)}

    return {
        "inputs": [tensor(v) for v in proto.graph.input if v.name not in initializers],
        "outputs": [tensor(v) for v in proto.graph.output],
        "metadata": {p.key: p.value for p in proto.metadata_props},
        "opset": max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0),
    }


def quantize_int8(model_bytes: bytes) -> bytes:
    """The model with int8 weights (dynamic quantization), its metadata kept; EdgeBuildError when it fails."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    original = onnx.load_from_string(model_bytes)
    with tempfile.TemporaryDirectory(prefix="mlspec-quantize-") as tmp:
        source, prepared, output = (Path(tmp) / n for n in ("model.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(model_bytes)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(str(prepared), str(output), weight_type=QuantType.QInt8)
            quantized = onnx.load(str(output))
            onnx.checker.check_model(quantized)
        except Exception as exc:  # onnxruntime's quantizer raises assorted types
            raise EdgeBuildError(f"onnxruntime could not quantize the model to int8: {exc}") from None
        finally:
            root.setLevel(level)
    kept = {p.key: p.value for p in original.metadata_props}
    kept[PRE_PROCESS_KEY] = "onnxruntime.quant"
    del quantized.metadata_props[:]
    for key, value in sorted(kept.items()):
        entry = quantized.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = quantized.SerializeToString()
    return data


def session(model_bytes: bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session over ``model_bytes`` (sequential, ``threads`` intra-op threads, no spinning)."""
    import onnxruntime as ort

    from mlspec.serving.models import session_options  # the model server's settings: the same latency

    return ort.InferenceSession(model_bytes, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


def score(model_bytes: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """The model's first output (``score`` when it has one) for rows ``x`` (float32 [N, F])."""
    import numpy as np

    run = session(model_bytes, threads)
    outputs = [o.name for o in run.get_outputs()]
    name = "score" if "score" in outputs else outputs[0]
    out: np.ndarray = run.run([name], {run.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return out


@dataclass(frozen=True)
class TestSplit:
    """The held-out rows a model is judged on: features (float32 [N, F]), targets, the task and metrics to compare."""

    x: np.ndarray
    y: np.ndarray
    task: str
    metrics: tuple[str, ...]
    about: dict[str, Any] = field(default_factory=dict)  # where the rows come from (pipeline, rows, first timestamp)

    __test__ = False  # not a pytest test class


def _drop(metric: str, full: float, quantized: float) -> float:
    from mlspec.runtime.metrics import higher_is_better

    return full - quantized if higher_is_better(metric) else quantized - full


def accuracy_report(full: bytes, quantized: bytes, split: TestSplit, allowed: float) -> dict[str, Any]:
    """Each metric of the full and the quantized model on ``split`` and its drop (the loss, in the metric's units;
    negative when int8 did better); raises EdgeBuildError naming the metric, both values and the allowed drop
    when a drop exceeds ``allowed``."""
    import numpy as np

    from mlspec.runtime.metrics import compute_metric, higher_is_better

    if len(split.y) == 0:
        raise EdgeBuildError("the test split is empty: the quantized model cannot be checked")
    full_scores, int8_scores = score(full, split.x), score(quantized, split.x)
    difference = float(np.max(np.abs(full_scores.astype(np.float64) - int8_scores)))
    if not math.isfinite(difference):
        raise EdgeBuildError(f"the model gives non-finite scores on the {len(split.y)} test rows; it cannot be checked")
    metrics: dict[str, dict[str, Any]] = {}
    for metric in split.metrics:
        a = compute_metric(metric, split.task, split.y, full_scores)
        b = compute_metric(metric, split.task, split.y, int8_scores)
        if not (math.isfinite(a) and math.isfinite(b)):
            raise EdgeBuildError(
                f"{metric} is undefined on the {len(split.y)} test rows (full {a}, int8 {b}), so the quantized "
                "model cannot be checked with it"
            )
        metrics[metric] = {
            "full": a,
            "quantized": b,
            "drop": _drop(metric, a, b),
            "higher_is_better": higher_is_better(metric),
        }
    worst = max(metrics, key=lambda m: metrics[m]["drop"]) if metrics else None
    report = {
        "checked": True,
        "split": {**split.about, "rows": len(split.y)},
        "metrics": metrics,
        "max_drop": metrics[worst]["drop"] if worst else 0.0,
        "worst_metric": worst,
        "allowed_drop": allowed,
        "max_abs_score_diff": difference,
    }
    failed = [m for m, v in metrics.items() if v["drop"] > allowed + 1e-12]
    if failed:
        detail = "; ".join(
            f"{m} {metrics[m]['full']:.6g} (full) -> {metrics[m]['quantized']:.6g} (int8), a drop of "
            f"{metrics[m]['drop']:.3g} > max_accuracy_drop {allowed:g}"
            for m in failed
        )
        raise EdgeBuildError(f"int8 quantization loses too much accuracy on the {len(split.y)} test rows: {detail}")
    report["passed"] = True
    return report
