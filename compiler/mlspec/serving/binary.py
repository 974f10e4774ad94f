"""The Open Inference Protocol's binary tensor data extension (as KServe and Triton accept it) on the REST server.

A request with the ``Inference-Header-Content-Length: N`` header carries its JSON inference header in the first N
bytes of the body; the rest is the raw little-endian bytes of every input whose ``parameters.binary_data_size``
gives their length, in input order. An answer asked for as binary (``parameters.binary_data_output`` on the
request, or ``binary_data`` on the output) is the JSON header with the output's ``binary_data_size`` followed by
the output's FP32 bytes, with ``Inference-Header-Content-Length`` and ``application/octet-stream``.

Only infer requests that carry the header come here: a plain JSON request never touches this module.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from mlspec.serving.http import response_with_headers
from mlspec.serving.protocol import InferRequest, ProtocolError, infer_request, request_inputs, tensor_shape

HEADER = "Inference-Header-Content-Length"
CONTENT_TYPE = "application/octet-stream"
# the OIP datatypes binary tensor data may carry here (BYTES, strings, and BF16 have no numeric meaning for rows)
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in (
        ("BOOL", "u1"),  # one byte per element: 0 false, anything else true
        ("UINT8", "u1"),
        ("UINT16", "<u2"),
        ("UINT32", "<u4"),
        ("UINT64", "<u8"),
        ("INT8", "i1"),
        ("INT16", "<i2"),
        ("INT32", "<i4"),
        ("INT64", "<i8"),
        ("FP16", "<f2"),
        ("FP32", "<f4"),
        ("FP64", "<f8"),
    )
}
_OUT = np.dtype("<f4")
_dumps = json.dumps


def header_length(value: str, body_length: int) -> int:
    """The byte length of the JSON inference header a body of ``body_length`` bytes starts with; raise
    ProtocolError unless the header's value is a byte count that fits the body (0 means the whole body)."""
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ProtocolError(f"{HEADER} must be the byte length of the JSON inference header, not {value!r}")
    length = int(text)
    if length > body_length:
        raise ProtocolError(f"{HEADER} is {length} bytes but the whole request body is {body_length} bytes")
    return length or body_length


def _binary_inputs(inputs: list[Any]) -> list[tuple[dict[str, Any], str, int]]:
    """The inputs that carry binary data, in order, with where they are named and their binary_data_size."""
    found = []
    for tensor in inputs:
        params = tensor.get("parameters") if type(tensor) is dict else None
        if type(params) is not dict or "binary_data_size" not in params:
            continue
        where = f"input {tensor.get('name')!r}"
        size = params["binary_data_size"]
        if type(size) is not int or size < 0:
            raise ProtocolError(f"{where}: parameters.binary_data_size must be a non-negative byte count, not {size!r}")
        if "data" in tensor:
            raise ProtocolError(f"{where} has both 'data' and parameters.binary_data_size; send its values one way")
        if "shared_memory_region" in params:
            raise ProtocolError(f"{where}: shared memory is not supported by this server")
        found.append((tensor, where, size))
    return found


def _tensor(tensor: dict[str, Any], where: str, body: bytes, offset: int, size: int) -> np.ndarray:
    """The array ``size`` bytes at ``offset`` of ``body`` hold, checked against the tensor's datatype and shape."""
    datatype = tensor.get("datatype")
    dtype = DTYPES.get(datatype) if type(datatype) is str else None
    if dtype is None:
        raise ProtocolError(
            f"{where} has datatype {datatype!r}; binary tensor data here takes a numeric datatype ({', '.join(DTYPES)})"
        )
    shape = tensor_shape(tensor, where)
    count = math.prod(shape)
    expected = count * dtype.itemsize
    if size != expected:
        raise ProtocolError(
            f"{where}: parameters.binary_data_size is {size} bytes, but shape {shape} of {datatype} "
            f"({dtype.itemsize} byte(s) each) takes {expected} bytes"
        )
    arr = np.frombuffer(body, dtype, count, offset)
    if datatype == "BOOL":
        arr = arr != 0
    elif not arr.flags.aligned:  # the bytes sit at any offset of the body; onnxruntime wants aligned arrays
        arr = arr.copy()
    return arr.reshape(shape)


def decode_binary(body: bytes, length_header: str, features: tuple[str, ...]) -> InferRequest:
    """Decode an infer request with binary tensor data (``length_header`` is its Inference-Header-Content-Length)
    into float32 rows, as decode_infer does a JSON one; raise ProtocolError saying what is wrong."""
    return infer_request(binary_document(body, length_header), features)


def binary_document(body: bytes, length_header: str) -> dict[str, Any]:
    """The request document of a body with binary tensor data: its JSON header, each binary input's values (an
    array) in its ``data``; raise ProtocolError saying what is wrong."""
    length = header_length(length_header, len(body))
    try:
        doc = json.loads(body[:length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            f"the JSON inference header (the first {length} bytes of the body, as {HEADER} says) is not valid "
            f"JSON: {exc}"
        ) from exc
    binary = _binary_inputs(request_inputs(doc))
    declared = sum(size for _tensor_doc, _where, size in binary)
    available = len(body) - length
    if declared != available:
        named = ", ".join(f"{where} {size}" for _tensor_doc, where, size in binary) or "no input declares any"
        raise ProtocolError(
            f"the inputs' parameters.binary_data_size add up to {declared} bytes ({named}) but {available} bytes "
            f"follow the {length}-byte JSON inference header"
        )
    offset = length
    for tensor, where, size in binary:
        tensor["data"] = _tensor(tensor, where, body, offset, size)
        offset += size
    return doc  # type: ignore[no-any-return]


def encode_binary(prefix: str, out: np.ndarray, rid: str | None) -> bytes:
    """The whole HTTP response answering with ``out`` as binary tensor data (FP32, little-endian) after the JSON
    inference header; raise ValueError when ``out`` holds NaN or infinity, as the JSON answer does."""
    data = np.ascontiguousarray(out, dtype=_OUT)
    if not np.isfinite(data).all():
        raise ValueError("output holds NaN or infinity")
    raw = data.tobytes()
    shape = _dumps(list(data.shape))
    tail = "}" if rid is None else f',"id":{_dumps(rid)}}}'
    head = f'{prefix}"shape":{shape},"parameters":{{"binary_data_size":{len(raw)}}}}}]{tail}'.encode()
    return response_with_headers(200, head + raw, {HEADER: str(len(head))}, CONTENT_TYPE)
