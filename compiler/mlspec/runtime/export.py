"""The export-onnx step: the trained model as ONNX, checked against torch on the whole test set."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mlspec.runtime.model import ScoringModel, predict

INPUT = "input"
OUTPUT = "score"
OPSET = 18
TOLERANCE = 1e-4


class OnnxParityError(RuntimeError):
    """onnxruntime's scores differ from torch's."""


def export(model: ScoringModel, features: list[str], x_test: np.ndarray, out_path: str) -> str:
    """Write ``out_path`` (input "input" float32 [batch, F], output "score"); returns its sha256."""
    width = len(features)
    example = torch.zeros(2, width, dtype=torch.float32)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch accepts file objects
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    del proto.metadata_props[:]
    for key, value in {"mlspec.features": ",".join(features), "mlspec.task": model.task}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    content = proto.SerializeToString()
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(x_test, dtype=np.float32)
    (onnx_scores,) = session.run([OUTPUT], {INPUT: x})
    torch_scores = predict(model, x)
    if onnx_scores.shape != torch_scores.shape:
        raise OnnxParityError(f"ONNX output shape {onnx_scores.shape} differs from torch's {torch_scores.shape}")
    diff = float(np.max(np.abs(onnx_scores - torch_scores))) if len(x) else 0.0
    if not diff <= TOLERANCE:
        raise OnnxParityError(
            f"ONNX scores differ from torch on the test set: max abs diff {diff:.3g} > {TOLERANCE:g} over {len(x)} rows"
        )
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: str | Path) -> str:
    """The file's sha256."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
