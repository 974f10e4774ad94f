"""Open Inference Protocol v2 (KServe v2 REST) bodies for [N, F] FP32 models: infer requests decoded, infer
responses encoded, and the server, health and model metadata documents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

NUMERIC = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
)
_dumps = json.dumps
SERVER_NAME = "mlspec"
EXTENSIONS = ("mlspec_rollout",)  # GET /v2/models/<name>/rollout: the rollout status


class ProtocolError(ValueError):
    """The request does not follow the protocol or does not fit the model; the message says what is wrong."""


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request: float32 rows [N, F], the request id and its parameters."""

    rows: np.ndarray
    id: str | None
    parameters: dict[str, Any] | None


def _array(data: Any, where: str, kinds: str = "fiu") -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError(f"{where}: 'data' must be a list of numbers")
    try:
        arr = np.array(data)
    except ValueError as exc:  # ragged nesting
        raise ProtocolError(f"{where}: 'data' is not a regular array: {exc}") from exc
    if arr.dtype.kind not in kinds:
        raise ProtocolError(f"{where}: 'data' must hold only numbers")
    return arr


def _shape(tensor: dict[str, Any], where: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers, not {shape!r}")
    return shape


def _tensor_input(tensor: dict[str, Any], n_features: int) -> np.ndarray:
    where = "input 'input'"
    datatype = tensor.get("datatype")
    if datatype != "FP32":
        raise ProtocolError(f"{where} has datatype {datatype!r}; this model takes FP32")
    shape = _shape(tensor, where)
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise ProtocolError(f"{where} has shape {shape}; this model takes [N, {n_features}] with N >= 1")
    arr = _array(tensor.get("data"), where)
    if arr.size != shape[0] * n_features:
        raise ProtocolError(f"{where}: 'data' has {arr.size} values; shape {shape} needs {shape[0] * n_features}")
    return arr.astype(np.float32, copy=False).reshape(shape[0], n_features)


def _feature_inputs(inputs: list[Any], features: tuple[str, ...]) -> np.ndarray:
    columns: dict[str, np.ndarray] = {}
    known = set(features)
    rows = -1
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise ProtocolError("each entry of 'inputs' must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        if name not in known:
            raise ProtocolError(
                f"unknown input {name!r}: send one tensor 'input' [N, {len(features)}] or one input per feature "
                f"({', '.join(features)})"
            )
        where = f"input {name!r}"
        if name in columns:
            raise ProtocolError(f"{where} is given twice")
        datatype = tensor.get("datatype")
        if datatype not in NUMERIC:
            raise ProtocolError(f"{where} has datatype {datatype!r}; a feature input takes a numeric datatype")
        shape = _shape(tensor, where)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise ProtocolError(f"{where} has shape {shape}; a feature input has shape [N] or [N, 1] with N >= 1")
        if rows not in (-1, shape[0]):
            raise ProtocolError(f"{where} has {shape[0]} rows; the other inputs have {rows}")
        rows = shape[0]
        arr = _array(tensor.get("data"), where, "fiub")
        if arr.size != rows:
            raise ProtocolError(f"{where}: 'data' has {arr.size} values; shape {shape} needs {rows}")
        columns[name] = arr.reshape(rows)
    missing = [f for f in features if f not in columns]
    if missing:
        raise ProtocolError(f"missing feature input(s): {', '.join(missing)}")
    out = np.empty((rows, len(features)), dtype=np.float32)
    for index, name in enumerate(features):
        out[:, index] = columns[name]
    return out


def decode_infer(body: bytes, features: tuple[str, ...]) -> InferRequest:
    """Decode an OIP v2 infer request body into float32 rows; raise ProtocolError saying what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}") from exc
    if type(doc) is not dict:
        raise ProtocolError("request body must be a JSON object with an 'inputs' list")
    inputs = doc.get("inputs")
    if type(inputs) is not list or not inputs:
        raise ProtocolError("request body needs a non-empty 'inputs' list")
    first = inputs[0]
    if len(inputs) == 1 and type(first) is dict and first.get("name") == "input":
        rows = _tensor_input(first, len(features))
    else:
        rows = _feature_inputs(inputs, features)
    rid = doc.get("id")
    if rid is not None and type(rid) is not str:
        raise ProtocolError("'id' must be a string")
    params = doc.get("parameters")
    if params is not None and type(params) is not dict:
        raise ProtocolError("'parameters' must be an object")
    return InferRequest(rows, rid, params)


def response_prefix(model_name: str, version: str, variant: str, output_name: str) -> str:
    """The constant start of every infer response from one variant (pre-encoded once per variant)."""
    return (
        f'{{"model_name":{_dumps(model_name)},"model_version":{_dumps(version)},'
        f'"parameters":{{"variant":{_dumps(variant)}}},"outputs":[{{"name":{_dumps(output_name)},"datatype":"FP32",'
    )


def encode_infer(prefix: str, out: np.ndarray, rid: str | None) -> bytes:
    """An infer response body for ``out``; raise ValueError when ``out`` holds NaN or infinity."""
    data = _dumps(out.ravel().tolist(), allow_nan=False)
    shape = _dumps(list(out.shape))
    if rid is None:
        return f'{prefix}"shape":{shape},"data":{data}}}]}}'.encode()
    return f'{prefix}"shape":{shape},"data":{data}}}],"id":{_dumps(rid)}}}'.encode()


def error_body(message: str) -> bytes:
    """The JSON body of an error response."""
    return _dumps({"error": message}).encode()


def json_body(payload: Any) -> bytes:
    """A JSON document as a response body."""
    return _dumps(payload).encode()


def server_metadata(version: str) -> dict[str, Any]:
    """GET /v2: the server's name, version and protocol extensions."""
    return {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}


def server_ready(ready: bool, states: dict[str, str], devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """GET /v2/health/ready: readiness, with each variant's state and device (mlspec's additions)."""
    return {"ready": ready, "variants": states, "devices": devices}


def model_ready(name: str, ready: bool) -> dict[str, Any]:
    """GET /v2/models/<name>[/versions/<v>]/ready."""
    return {"name": name, "ready": ready}


def output_metadata(session: Any, output_name: str) -> dict[str, Any]:
    """The metadata of a model's served output (a dynamic dimension is -1)."""
    out = next(o for o in session.get_outputs() if o.name == output_name)
    shape = [d if isinstance(d, int) else -1 for d in out.shape]
    return {"name": out.name, "datatype": "FP32", "shape": shape}


def model_metadata(
    name: str,
    versions: list[str],
    n_features: int,
    outputs: list[dict[str, Any]],
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """GET /v2/models/<name>[/versions/<v>]: the model's versions, platform, input and outputs."""
    return {
        "name": name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, n_features]}],
        "outputs": outputs,
        "parameters": parameters,
    }
