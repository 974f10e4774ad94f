"""Open Inference Protocol v2 (KServe v2 REST) bodies for [N, F] FP32 models: infer requests decoded, infer
responses encoded, and the server, health and model metadata documents.

Bodies with binary tensor data (the ``binary_tensor_data`` extension) are read and written by
:mod:`~mlspec.serving.binary`, which hands the decoded tensors back to :func:`infer_request`."""

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
# binary_tensor_data: raw tensor bytes after the JSON (mlspec.serving.binary); mlspec_rollout: GET .../rollout
EXTENSIONS = ("binary_tensor_data", "mlspec_rollout")
BINARY_HINT = "; a body carrying binary tensor data needs the Inference-Header-Content-Length header"
# an input value the model would get as NaN or infinity: the caller's mistake (400), not a model failure (a 500
# counted against the variant, as a model that answers NaN is)
NON_FINITE_INPUT = " holds NaN, infinity or a number beyond the FP32 range (3.4e38)"


class ProtocolError(ValueError):
    """The request does not follow the protocol or does not fit the model; the message says what is wrong."""


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request: float32 rows [N, F], the request id and its parameters; ``binary_output``
    when the answer goes as binary tensor data, ``outputs`` the output names it asks for (empty: all)."""

    rows: np.ndarray
    id: str | None
    parameters: dict[str, Any] | None
    binary_output: bool = False
    outputs: tuple[str, ...] = ()
    routed: bool = True  # False for a call to a pinned version: the rollout did not choose it, so it is not judged


def _array(tensor: dict[str, Any], where: str, kinds: str = "fiu") -> np.ndarray:
    data = tensor.get("data")
    if not isinstance(data, list):
        if isinstance(data, np.ndarray):  # binary tensor data, decoded and checked by mlspec.serving.binary
            return data
        params = tensor.get("parameters")
        if data is None and isinstance(params, dict) and "binary_data_size" in params:
            raise ProtocolError(f"{where} has parameters.binary_data_size, so its values are binary{BINARY_HINT}")
        raise ProtocolError(f"{where}: 'data' must be a list of numbers")
    try:
        arr = np.array(data)
    except ValueError as exc:  # ragged nesting
        raise ProtocolError(f"{where}: 'data' is not a regular array: {exc}") from exc
    if arr.dtype.kind not in kinds:
        raise ProtocolError(f"{where}: 'data' must hold only numbers")
    return arr


def tensor_shape(tensor: dict[str, Any], where: str) -> list[int]:
    """The tensor's 'shape'; raise ProtocolError unless it is a list of non-negative integers."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers, not {shape!r}")
    return shape


def _tensor_input(tensor: dict[str, Any], n_features: int) -> np.ndarray:
    where = "input 'input'"
    datatype = tensor.get("datatype")
    if datatype != "FP32":
        raise ProtocolError(f"{where} has datatype {datatype!r}; this model takes FP32")
    shape = tensor_shape(tensor, where)
    if len(shape) != 2 or shape[1] != n_features or shape[0] < 1:
        raise ProtocolError(f"{where} has shape {shape}; this model takes [N, {n_features}] with N >= 1")
    arr = _array(tensor, where)
    if arr.size != shape[0] * n_features:
        raise ProtocolError(f"{where}: 'data' has {arr.size} values; shape {shape} needs {shape[0] * n_features}")
    rows = arr.astype(np.float32, copy=False).reshape(shape[0], n_features)
    if not np.isfinite(rows).all():
        raise ProtocolError(f"{where}{NON_FINITE_INPUT}")
    return rows


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
        shape = tensor_shape(tensor, where)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise ProtocolError(f"{where} has shape {shape}; a feature input has shape [N] or [N, 1] with N >= 1")
        if rows not in (-1, shape[0]):
            raise ProtocolError(f"{where} has {shape[0]} rows; the other inputs have {rows}")
        rows = shape[0]
        arr = _array(tensor, where, "fiub")
        if arr.size != rows:
            raise ProtocolError(f"{where}: 'data' has {arr.size} values; shape {shape} needs {rows}")
        columns[name] = arr.reshape(rows)
    missing = [f for f in features if f not in columns]
    if missing:
        raise ProtocolError(f"missing feature input(s): {', '.join(missing)}")
    out = np.empty((rows, len(features)), dtype=np.float32)
    for index, name in enumerate(features):
        out[:, index] = columns[name]
    if not np.isfinite(out).all():
        bad = next(name for index, name in enumerate(features) if not np.isfinite(out[:, index]).all())
        raise ProtocolError(f"input {bad!r}{NON_FINITE_INPUT}")
    return out


def parse_body(body: bytes) -> Any:
    """A request body's JSON; raise ProtocolError saying what is wrong (and that binary tensor data needs its
    header, when the body looks like it)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        hint = BINARY_HINT if isinstance(exc, UnicodeDecodeError) or str(exc).startswith("Extra data") else ""
        raise ProtocolError(f"request body is not valid JSON: {exc}{hint}") from exc


def decode_infer(body: bytes, features: tuple[str, ...]) -> InferRequest:
    """Decode an OIP v2 infer request body into float32 rows; raise ProtocolError saying what is wrong."""
    return infer_request(parse_body(body), features)


def request_inputs(doc: Any) -> list[Any]:
    """The 'inputs' list of a parsed infer request; raise ProtocolError when the request has none."""
    if type(doc) is not dict:
        raise ProtocolError("request body must be a JSON object with an 'inputs' list")
    inputs = doc.get("inputs")
    if type(inputs) is not list or not inputs:
        raise ProtocolError("request body needs a non-empty 'inputs' list")
    return inputs


def infer_request(doc: Any, features: tuple[str, ...]) -> InferRequest:
    """The request a parsed infer request document makes (its tensors' 'data' lists, or arrays already decoded
    from binary tensor data); raise ProtocolError saying what is wrong."""
    inputs = request_inputs(doc)
    first = inputs[0]
    if len(inputs) == 1 and type(first) is dict and first.get("name") == "input":
        rows = _tensor_input(first, len(features))
    else:
        rows = _feature_inputs(inputs, features)
    return request_with_rows(doc, rows)


def request_with_rows(doc: dict[str, Any], rows: np.ndarray) -> InferRequest:
    """The request ``doc`` makes with ``rows`` as its input (decoded from it, or looked up by its entity keys):
    its id, parameters and requested outputs checked; raise ProtocolError saying what is wrong."""
    rid = doc.get("id")
    if rid is not None and type(rid) is not str:
        raise ProtocolError("'id' must be a string")
    params = doc.get("parameters")
    if params is not None and type(params) is not dict:
        raise ProtocolError("'parameters' must be an object")
    outputs = doc.get("outputs")
    if outputs is None and (params is None or "binary_data_output" not in params):
        return InferRequest(rows, rid, params)
    binary, names = requested_outputs(outputs, params)
    return InferRequest(rows, rid, params, binary, names)


def requested_outputs(outputs: Any, params: dict[str, Any] | None) -> tuple[bool, tuple[str, ...]]:
    """Whether the answer goes as binary tensor data, and the output names asked for (empty: all), from a
    request's 'outputs' and its ``binary_data_output`` parameter (an output's ``binary_data`` overrides it)."""
    binary = False if params is None else params.get("binary_data_output", False)
    if type(binary) is not bool:
        raise ProtocolError(f"parameters.binary_data_output must be true or false, not {binary!r}")
    if outputs is None:
        return binary, ()
    if type(outputs) is not list:
        raise ProtocolError("'outputs' must be a list of objects naming the outputs to return")
    names: list[str] = []
    for output in outputs:
        name = output.get("name") if type(output) is dict else None
        if type(name) is not str:
            raise ProtocolError(f"each entry of 'outputs' must be an object with a string 'name', not {output!r}")
        if name in names:
            raise ProtocolError(f"output {name!r} is requested twice")
        names.append(name)
        out_params = output.get("parameters")
        if out_params is None:
            continue
        if type(out_params) is not dict:
            raise ProtocolError(f"output {name!r}: 'parameters' must be an object")
        if out_params.get("class_count", 0) or "classification" in out_params:
            raise ProtocolError(f"output {name!r}: the classification extension is not supported by this server")
        if "shared_memory_region" in out_params:
            raise ProtocolError(f"output {name!r}: shared memory is not supported by this server")
        flag = out_params.get("binary_data", binary)
        if type(flag) is not bool:
            raise ProtocolError(f"output {name!r}: parameters.binary_data must be true or false, not {flag!r}")
        binary = flag  # one output is served, so its flag decides
    return binary, tuple(names)


def unknown_outputs(names: tuple[str, ...], output_name: str) -> str:
    """Why a request asking for outputs ``names`` cannot be answered by a model whose output is ``output_name``
    ("" when it can)."""
    unknown = [name for name in names if name != output_name]
    if not unknown:
        return ""
    return f"unknown output(s) {', '.join(map(repr, unknown))}: this model's only output is {output_name!r}"


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
