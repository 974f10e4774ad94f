"""Open Inference Protocol gRPC messages to and from what the REST server reads and writes.

A ``ModelInferRequest`` becomes the REST request document (its tensors' values already numpy arrays, as the binary
tensor data extension hands them over) and goes through :func:`~mlspec.serving.protocol.infer_request`: the same
checks, the same error messages. The shared infer path answers with a whole HTTP response; :func:`read_answer` and
:func:`infer_response` turn that into a ``ModelInferResponse`` (FP32 values survive the JSON text exactly: each
float32 is written as the shortest decimal that reads back as the same number).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mlspec.serving.binary import DTYPES
from mlspec.serving.oip_grpc import open_inference_grpc_pb2 as pb
from mlspec.serving.protocol import InferRequest, ProtocolError, infer_request

# datatype -> the typed field of InferTensorContents holding its values (FP16 has none: raw_input_contents only)
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
# each typed field's own element type (an INT8 tensor's values arrive as int32s, and so on)
FIELD_DTYPES = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}
REST_ONLY_PARAMETERS = ("binary_data_output",)  # the REST binary extension's switch; raw contents are gRPC's own
_FP32 = np.dtype("<f4")


def parameter_value(parameter: pb.InferParameter) -> Any:
    """The value an InferParameter holds (bool, int, str or float; None when none is set)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_of(parameters: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` as a plain dict of values."""
    return {key: parameter_value(value) for key, value in parameters.items()}


def typed_values(tensor: pb.ModelInferRequest.InferInputTensor, where: str) -> np.ndarray | None:
    """The tensor's values from its typed ``contents`` field (None for a datatype REST refuses anyway)."""
    datatype = tensor.datatype
    field = CONTENTS.get(datatype)
    if datatype == "BYTES":  # string entity keys; as features REST refuses them with its own message
        return np.array([b.decode("utf-8", "replace") for b in tensor.contents.bytes_contents], dtype=object)
    if field is None:
        if datatype == "FP16":
            raise ProtocolError(f"{where}: FP16 values have no typed contents field; send them in raw_input_contents")
        return None
    sent = [f.name for f, _values in tensor.contents.ListFields()]
    if sent and field not in sent:
        given = ", ".join(f"contents.{name}" for name in sent)
        raise ProtocolError(f"{where} has datatype {datatype!r}, whose values go in contents.{field}, not {given}")
    return np.array(getattr(tensor.contents, field), dtype=FIELD_DTYPES[field])


def raw_values(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes, where: str) -> np.ndarray | None:
    """The tensor's values from its raw little-endian bytes (None for a datatype REST refuses anyway)."""
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        return None
    if tensor.HasField("contents"):
        raise ProtocolError(f"{where} has 'contents' while the request sends raw_input_contents; send one or the other")
    if len(raw) % dtype.itemsize:
        raise ProtocolError(
            f"{where}: its raw_input_contents entry has {len(raw)} bytes, not a whole number of {tensor.datatype} "
            f"values ({dtype.itemsize} byte(s) each)"
        )
    values = np.frombuffer(raw, dtype)
    return values != 0 if tensor.datatype == "BOOL" else values


def request_document(request: pb.ModelInferRequest) -> tuple[dict[str, Any], bool]:
    """The REST request document of a gRPC infer request (values as arrays), and whether its inputs were raw."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input, in the "
            "order of 'inputs'"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        where = f"input {tensor.name!r}"
        data = raw_values(tensor, raw[index], where) if raw else typed_values(tensor, where)
        doc: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if data is not None:
            doc["data"] = data
        inputs.append(doc)
    document: dict[str, Any] = {"inputs": inputs, "id": request.id or None}
    parameters = parameters_of(request.parameters)
    for key in REST_ONLY_PARAMETERS:
        parameters.pop(key, None)
    document["parameters"] = parameters or None
    if request.outputs:
        document["outputs"] = [
            {"name": o.name, **({"parameters": parameters_of(o.parameters)} if o.parameters else {})}
            for o in request.outputs
        ]
    return document, bool(raw)


def decode_document(document: dict[str, Any], features: tuple[str, ...]) -> InferRequest:
    """A gRPC request's document (:func:`request_document`) decoded into float32 rows; ProtocolError as REST's."""
    if not document["inputs"]:
        raise ProtocolError("the request needs at least one tensor in 'inputs'")
    decoded = infer_request(document, features)
    decoded.binary_output = False  # the answer is a ModelInferResponse, never REST's binary body
    return decoded


def read_answer(data: bytes) -> tuple[int, dict[str, Any]]:
    """The status and JSON document of an answer of the shared infer path (a whole HTTP response)."""
    head, _sep, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    document: dict[str, Any] = json.loads(body)
    return status, document


def infer_response(answer: dict[str, Any], raw: bool) -> pb.ModelInferResponse:
    """A ModelInferResponse with the REST answer's contents: outputs as raw_output_contents when the request's
    inputs were raw (what Triton's client reads), else as typed contents."""
    reply = pb.ModelInferResponse(
        model_name=answer["model_name"], model_version=answer["model_version"], id=answer.get("id") or ""
    )
    for key, value in (answer.get("parameters") or {}).items():
        reply.parameters[key].string_param = str(value)
    for output in answer["outputs"]:
        tensor = reply.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        if raw:
            reply.raw_output_contents.append(np.asarray(output["data"], dtype=_FP32).tobytes())
        else:
            tensor.contents.fp32_contents.extend(output["data"])
    return reply


def property_text(value: Any) -> str:
    """A model metadata parameter as the text of a ``properties`` entry (JSON unless it is a string)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def metadata_response(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """A ModelMetadataResponse with the REST model metadata (its parameters as ``properties``)."""
    reply = pb.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for tensor in metadata["inputs"]:
        reply.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    for tensor in metadata["outputs"]:
        reply.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    for key, value in metadata.get("parameters", {}).items():
        reply.properties[key] = property_text(value)
    return reply
