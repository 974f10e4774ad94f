"""The Open Inference Protocol over gRPC on the model server: Triton's own gRPC client against a real server process
(``grpc_port: 0``), answers checked against onnxruntime run here; and the committed generated code against the proto.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
grpc = pytest.importorskip("grpc")
tc = pytest.importorskip("tritonclient.grpc")

from tritonclient.grpc import service_pb2 as triton_pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from mlspec.serving import client as serving_client  # noqa: E402
from mlspec.serving import process  # noqa: E402
from mlspec.serving.config import ConfigError, ServingConfig  # noqa: E402
from mlspec.serving.oip_grpc import open_inference_grpc_pb2 as pb  # noqa: E402
from mlspec.serving.oip_grpc import open_inference_grpc_pb2_grpc as service  # noqa: E402
from mlspec.serving.router import sticky_point  # noqa: E402
from tests.unit.test_serving import CANARY_W, STABLE_W, Server, ort_scores, score, variant  # noqa: E402

PACKAGE = Path(pb.__file__).parent
PROTO = PACKAGE / "open_inference_grpc.proto"
ROWS = [[0.5, -1.0, 2.0], [3.0, 0.25, 1.0]]


# --- the generated code ------------------------------------------------------------------------------------


def parse_proto(text: str) -> tuple[dict[str, dict[str, int]], dict[str, tuple[str, str]]]:
    """Every message (nested ones as ``Outer.Inner``) with its fields' numbers, and every rpc with its request
    and response types, read from .proto text (comments dropped; fields in a oneof belong to its message)."""
    tokens = re.findall(r"[A-Za-z_][\w.]*|\d+|[{}()=;<>,]", re.sub(r"//[^\n]*", "", text))
    messages: dict[str, dict[str, int]] = {}
    methods: dict[str, tuple[str, str]] = {}
    blocks: list[tuple[str, str]] = []  # (kind, name) of each open {...}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("message", "service", "oneof") and tokens[i + 2] == "{":
            outer = [name for kind, name in blocks if kind == "message"]
            name = ".".join([*outer, tokens[i + 1]]) if token == "message" else tokens[i + 1]
            blocks.append((token, name))
            if token == "message":
                messages[name] = {}
            i += 3
            continue
        if token == "rpc":
            # rpc Name ( Request ) returns ( Response ) { }
            methods[tokens[i + 1]] = (tokens[i + 3], tokens[i + 7])
            i += 11
            continue
        if token == "{":
            blocks.append(("block", ""))
        elif token == "}":
            blocks.pop()
        elif token == "=" and blocks and blocks[-1][0] in ("message", "oneof"):
            owner = next(name for kind, name in reversed(blocks) if kind == "message")
            messages[owner][tokens[i - 1]] = int(tokens[i + 1])
        i += 1
    return messages, methods


def descriptor_of(full_name: str) -> Any:
    top, *nested = full_name.split(".")
    descriptor = pb.DESCRIPTOR.message_types_by_name[top]
    for name in nested:
        descriptor = descriptor.nested_types_by_name[name]
    return descriptor


def generated_messages(descriptor: Any = None, prefix: str = "") -> dict[str, dict[str, int]]:
    """Every message the generated module defines (map entry types, which protoc makes itself, left out)."""
    found: dict[str, dict[str, int]] = {}
    children = pb.DESCRIPTOR.message_types_by_name if descriptor is None else descriptor.nested_types_by_name
    for name, child in children.items():
        if child.GetOptions().map_entry:
            continue
        full = f"{prefix}{name}"
        found[full] = {f.name: f.number for f in child.fields}
        found.update(generated_messages(child, full + "."))
    return found


def test_the_committed_generated_code_matches_the_proto() -> None:
    """Every message, field number and rpc of the .proto is in the generated descriptors and nothing else is;
    the service module registers every method under /inference.GRPCInferenceService/."""
    messages, methods = parse_proto(PROTO.read_text(encoding="utf-8"))
    assert len(messages) >= 18 and "ModelInferRequest.InferInputTensor" in messages  # the parser sees them
    assert messages["ModelInferRequest"]["raw_input_contents"] == 7
    assert messages["InferParameter"]["uint64_param"] == 5  # oneof members
    assert messages["ModelMetadataResponse"]["properties"] == 6  # map fields
    assert pb.DESCRIPTOR.package == "inference"
    assert generated_messages() == messages
    generated = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert {m.name: (m.input_type.name, m.output_type.name) for m in generated.methods} == methods
    source = Path(service.__file__).read_text(encoding="utf-8")
    for method in methods:
        assert f"'/inference.GRPCInferenceService/{method}'" in source
    stub = service.GRPCInferenceServiceStub(grpc.insecure_channel("127.0.0.1:9"))  # a channel connects lazily
    assert all(callable(getattr(stub, method)) for method in methods)
    for path in PACKAGE.glob("open_inference_grpc_pb2*"):
        assert path.read_text(encoding="utf-8").startswith("# Generated by scripts/generate_oip_grpc.py")


def test_triton_s_proto_and_ours_agree_on_every_field_we_share() -> None:
    """Triton's client speaks inference.GRPCInferenceService too (a superset of the OIP proto): same method names,
    and the same field numbers and types wherever a message of ours has a field of the same name. Both modules
    load in one process (ours builds its messages in a descriptor pool of its own)."""
    triton_methods = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        theirs = triton_methods[method.name]
        assert (theirs.input_type.full_name, theirs.output_type.full_name) == (
            method.input_type.full_name,
            method.output_type.full_name,
        )
    checked = 0
    for name in generated_messages():
        top, *nested = name.split(".")
        theirs = triton_pb.DESCRIPTOR.message_types_by_name[top]
        for part in nested:
            theirs = theirs.nested_types_by_name[part]
        for field in descriptor_of(name).fields:
            other = theirs.fields_by_name.get(field.name)
            if other is None:
                assert (name, field.name) == ("ModelMetadataResponse", "properties")  # Triton's lacks only this
                continue
            same = (other.number, other.type, other.is_repeated) == (field.number, field.type, field.is_repeated)
            assert same, (name, field.name)
            checked += 1
    assert checked > 50


# --- configuration ---------------------------------------------------------------------------------------


def test_grpc_port_is_optional_checked_and_round_trips() -> None:
    raw = {
        "deployment": "d", "model_name": "m", "features": ["a"], "port": 8601,
        "variants": [{"name": "stable", "version": "3", "path": "/x.onnx", "sha256": "a" * 64}],
    }  # fmt: skip
    assert ServingConfig.from_dict(raw).grpc_port is None
    for port in (0, 8602, 65535):
        config = ServingConfig.from_dict({**raw, "grpc_port": port})
        assert config.grpc_port == port and ServingConfig.from_json(config.to_json()) == config
    assert json.loads(ServingConfig.from_dict(raw).to_json())["grpc_port"] is None
    for bad in (-1, 65536, "8602", True, 1.5):
        with pytest.raises(ConfigError, match="'grpc_port' must be an integer from 0 to 65535"):
            ServingConfig.from_dict({**raw, "grpc_port": bad})
    with pytest.raises(ConfigError, match="'grpc_port' must differ from 'port'"):
        ServingConfig.from_dict({**raw, "grpc_port": 8601})
    assert ServingConfig.from_dict({**raw, "port": 0, "grpc_port": 0}).grpc_port == 0  # both any free port


# --- the server over gRPC -----------------------------------------------------------------------------------


def grpc_address(srv: Server) -> str:
    found = re.findall(r"grpc listening on (\S+)", srv.log.read_text())
    assert found, srv.log.read_text()
    return str(found[-1])


def triton(srv: Server) -> Any:
    return tc.InferenceServerClient(grpc_address(srv))


def stub(srv: Server) -> Any:
    return service.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_address(srv)))


def numpy_input(name: str, values: Any, datatype: str = "FP32") -> Any:
    array = np.asarray(values, dtype=tc.triton_to_np_dtype(datatype) if datatype != "BOOL" else bool)
    tensor = tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def triton_infer(client: Any, rows: Any, model: str = "fraud-api", **kwargs: Any) -> Any:
    return client.infer(model, [numpy_input("input", rows)], **kwargs)


def refusal(call: Callable[[], Any]) -> tuple[Any, str]:
    """The gRPC status code and message a call through Triton's client ends with."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def rest_error(srv: Server, path: str, body: Any) -> str:
    status, err = srv.request("POST", path, body)
    assert status >= 400, err
    return str(err["error"])


def test_triton_s_grpc_client_gets_the_same_answers_and_errors_as_rest(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    stable, canary = variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", CANARY_W, 0.5)
    rollout = {"strategy": "canary", "steps": [50, 100], "analysis": {"min_requests": 100000}}
    srv = serve([stable, canary], rollout, grpc_port=0)
    client = triton(srv)
    assert client.is_server_live() and client.is_server_ready()
    for name, version in (("fraud-api", ""), ("fraud-detector", ""), ("fraud-api", "3"), ("fraud-api", "4")):
        assert client.is_model_ready(name, version)
    meta = client.get_server_metadata()
    assert meta.name == "mlspec" and list(meta.extensions) == srv.request("GET", "/v2")[1]["extensions"]
    meta = client.get_model_metadata("fraud-api")
    assert (meta.name, list(meta.versions), meta.platform) == ("fraud-api", ["3", "4"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("score", "FP32", [-1, 1])]
    assert list(client.get_model_metadata("fraud-detector", "4").versions) == ["4"]
    ours = stub(srv).ModelMetadata(pb.ModelMetadataRequest(name="fraud-api"))  # Triton's proto has no properties
    assert json.loads(ours.properties["features"]) == ["a", "b", "c"] and ours.properties["device"] == "cpu"
    assert [v["version"] for v in json.loads(ours.properties["variants"])] == ["3", "4"]

    # numpy rows (Triton sends raw_input_contents and reads raw_output_contents), on the router's choice
    expected = {"stable": ort_scores(Path(stable["path"]), ROWS), "canary": ort_scores(Path(canary["path"]), ROWS)}
    seen = set()
    for i in range(30):
        result = triton_infer(client, ROWS, request_id=f"r{i}")
        reply = result.get_response()
        arm = reply.parameters["variant"].string_param
        seen.add(arm)
        version = {"stable": "3", "canary": "4"}[arm]
        assert (reply.id, reply.model_name, reply.model_version) == (f"r{i}", "fraud-api", version)
        out = result.as_numpy("score")
        assert out.dtype == np.float32 and out.shape == (2, 1)
        assert out.ravel().tolist() == expected[arm]  # exactly onnxruntime's float32s
    assert seen == {"stable", "canary"}
    # a pinned version, by either model name
    for model, version, arm in (("fraud-detector", "3", "stable"), ("fraud-api", "4", "canary")):
        result = triton_infer(client, ROWS, model, model_version=version)
        assert result.as_numpy("score").ravel().tolist() == expected[arm]
        assert result.get_response().model_version == version
    # typed contents in, typed contents out; one input per feature, of any numeric datatype
    typed = pb.ModelInferRequest(model_name="fraud-api", model_version="3", id="typed")
    typed.inputs.add(name="input", datatype="FP32", shape=[2, 3]).contents.fp32_contents.extend(np.ravel(ROWS))
    reply = stub(srv).ModelInfer(typed)
    assert not reply.raw_output_contents and list(reply.outputs[0].contents.fp32_contents) == expected["stable"]
    per_feature = [
        numpy_input("c", [2.0, 1.0], "FP64"),
        numpy_input("a", [[0.5], [3.0]]),
        numpy_input("b", [-1.0, 0.25], "FP16"),
    ]
    result = client.infer("fraud-api", per_feature, model_version="3")
    assert result.as_numpy("score").ravel().tolist() == expected["stable"]
    ints = pb.ModelInferRequest(model_name="fraud-api", model_version="3")
    for name, values in (("a", [1, 4]), ("b", [2, 5]), ("c", [3, 6])):
        ints.inputs.add(name=name, datatype="INT32", shape=[2]).contents.int_contents.extend(values)
    reply = stub(srv).ModelInfer(ints)
    assert list(reply.outputs[0].contents.fp32_contents) == [score(STABLE_W, [1, 2, 3]), score(STABLE_W, [4, 5, 6])]

    # errors: REST's messages, with the gRPC code of the same outcome
    infer_path = "/v2/models/fraud-api/infer"
    bad_shape = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    code, message = refusal(lambda: triton_infer(client, [[1.0, 2.0]]))
    assert code == "StatusCode.INVALID_ARGUMENT" and message == rest_error(srv, infer_path, bad_shape)
    assert message == "input 'input' has shape [1, 2]; this model takes [N, 3] with N >= 1"
    missing = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    code, message = refusal(lambda: client.infer("fraud-api", [numpy_input("a", [1.0])]))
    assert code == "StatusCode.INVALID_ARGUMENT" and message == rest_error(srv, infer_path, missing)
    code, message = refusal(lambda: triton_infer(client, ROWS, "nope"))
    assert code == "StatusCode.NOT_FOUND" and message == rest_error(srv, "/v2/models/nope/infer", bad_shape)
    code, message = refusal(lambda: triton_infer(client, ROWS, model_version="9"))
    assert code == "StatusCode.NOT_FOUND"
    assert message == rest_error(srv, "/v2/models/fraud-api/versions/9/infer", bad_shape)
    assert message == "model 'fraud-api' has no version '9' (versions: 3, 4)"
    assert refusal(lambda: client.is_model_ready("nope"))[0] == "StatusCode.NOT_FOUND"
    assert refusal(lambda: client.get_model_metadata("fraud-api", "9"))[0] == "StatusCode.NOT_FOUND"
    assert refusal(lambda: client.get_model_config("fraud-api"))[0] == "StatusCode.UNIMPLEMENTED"  # Triton's own
    wrong_field = pb.ModelInferRequest(model_name="fraud-api")
    wrong_field.inputs.add(name="input", datatype="FP32", shape=[1, 3]).contents.fp64_contents.extend([1, 2, 3])
    with pytest.raises(grpc.RpcError) as caught:
        stub(srv).ModelInfer(wrong_field)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "whose values go in contents.fp32_contents, not contents.fp64_contents" in caught.value.details()
    short = pb.ModelInferRequest(model_name="fraud-api", raw_input_contents=[np.zeros(2, np.float32).tobytes()])
    short.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    with pytest.raises(grpc.RpcError) as caught:
        stub(srv).ModelInfer(short)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "input 'input': 'data' has 2 values; shape [1, 3] needs 3"

    # REST and gRPC answers count in the same per-variant metrics; gRPC calls by method and code besides
    answered = 30 + 2 + 1 + 1 + 1  # the gRPC infers above that were answered
    for _ in range(5):
        assert srv.infer([ROWS[0]], path="/v2/models/fraud-api/versions/3/infer")[0] == 200
    assert srv.metric("mlspec_requests_total") == answered + 5
    assert srv.metric("mlspec_grpc_responses_total", method="ModelInfer", code="OK") == answered
    assert srv.metric("mlspec_grpc_responses_total", method="ModelInfer", code="INVALID_ARGUMENT") == 4
    assert srv.metric("mlspec_grpc_responses_total", method="ModelInfer", code="NOT_FOUND") == 2
    assert srv.metric("mlspec_grpc_responses_total", method="ModelReady", code="OK") == 4


def test_a_canary_judges_grpc_traffic_and_its_failures_are_internal(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """A canary whose outputs are NaN (sqrt of a negative): judged on gRPC requests alone, it is rolled back."""
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", [-1.0] * 3, sqrt=True)],
        {"strategy": "canary", "steps": [50, 100], "analysis": {"max_error_rate": 0.01, "min_requests": 20}},
        grpc_port=0,
    )
    client = triton(srv)
    codes: dict[str, int] = {}
    for _ in range(400):
        try:
            assert triton_infer(client, [[1.0, 1.0, 1.0]]).as_numpy("score").tolist() == [[6.0]]
            codes["OK"] = codes.get("OK", 0) + 1
        except InferenceServerException as exc:
            assert (exc.status(), exc.message()) == ("StatusCode.INTERNAL", "model output holds NaN or infinity")
            codes["INTERNAL"] = codes.get("INTERNAL", 0) + 1
        if srv.status()["phase"] != "progressing":
            break
    status = srv.status()
    assert status["phase"] == "rolled_back" and status["reason"].startswith("error rate 1.00 > max 0.01 over 20")
    assert codes["INTERNAL"] == 20 and srv.metric("mlspec_request_errors_total", variant="canary") == 20
    assert srv.metric("mlspec_requests_total", variant="stable") == codes["OK"]
    for _ in range(20):  # rolled back: gRPC traffic stays on stable
        assert triton_infer(client, [[1.0, 1.0, 1.0]]).get_response().parameters["variant"].string_param == "stable"


def test_ab_arms_are_sticky_by_the_same_key_over_grpc_and_rest(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve(
        [variant(tmp_path, "champion", "3", STABLE_W), variant(tmp_path, "challenger", "4", CANARY_W)],
        {"strategy": "ab", "variants": [{"alias": "champion", "weight": 70}, {"alias": "challenger", "weight": 30}],
         "sticky_key": "customer_id"},
        grpc_port=0,
    )  # fmt: skip
    client = triton(srv)
    arms = set()
    for i in range(40):
        key = f"cust-{i}"
        reply = triton_infer(client, [[1.0, 2.0, 3.0]], parameters={"customer_id": key}).get_response()
        arm = reply.parameters["variant"].string_param
        arms.add(arm)
        assert (sticky_point(key) * 100 < 70) == (arm == "champion")
        rest = srv.infer([[1.0, 2.0, 3.0]], parameters={"customer_id": key})[1]["parameters"]["variant"]
        by_header = client.infer("fraud-api", [numpy_input("input", [[1.0, 2.0, 3.0]])], headers={"x-sticky-key": key})
        assert rest == arm == by_header.get_response().parameters["variant"].string_param
    assert arms == {"champion", "challenger"}


def test_shadow_request_log_and_batching_see_grpc_requests_and_sigterm_stops_grpc(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    log_path = tmp_path / "requests.jsonl"
    srv = serve(
        [variant(tmp_path, "stable", "3", [0.1] * 3), variant(tmp_path, "shadow", "4", [0.1] * 3, 0.25)],
        {"strategy": "shadow", "sample": 100},
        grpc_port=0,
        log={"path": str(log_path), "sample_rate": 1.0, "enabled": True},
    )
    address = grpc_address(srv)

    async def burst(n: int) -> list[Any]:
        """``n`` single-row ModelInfer calls in flight at once on one channel."""
        async with grpc.aio.insecure_channel(address) as channel:
            call = service.GRPCInferenceServiceStub(channel).ModelInfer
            requests = []
            for i in range(n):
                request = pb.ModelInferRequest(model_name="fraud-api", id=str(i))
                tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 3])
                tensor.contents.fp32_contents.extend([float(i), 1.0, 0.5])
                requests.append(request)
            return list(await asyncio.gather(*(call(r) for r in requests)))

    replies = asyncio.run(burst(60))
    for i, reply in enumerate(replies):
        assert reply.id == str(i) and reply.parameters["variant"].string_param == "stable"
        assert list(reply.outputs[0].contents.fp32_contents) == pytest.approx([score([0.1] * 3, [i, 1.0, 0.5])])
    # they ran through the batcher (how many shared a session.run depends on how grpc.aio hands calls to the loop)
    assert srv.metric("mlspec_batch_size_rows_sum", variant="stable") == 60
    deadline = time.monotonic() + 5
    while srv.metric("mlspec_shadow_requests_total") < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.metric("mlspec_shadow_requests_total") == 60
    assert srv.metric("mlspec_shadow_mean_abs_diff") == pytest.approx(0.25, abs=1e-5)

    os.kill(srv.pid, signal.SIGTERM)  # stops both listeners and flushes the request log
    _, code = os.waitpid(srv.pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    logged = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sorted(row["a"] for row in logged) == [float(i) for i in range(60)]
    assert {row["variant"] for row in logged} == {"stable"}
    host, port = address.rsplit(":", 1)
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
        pass


def test_a_taken_grpc_port_refuses_to_start_and_says_why(serve: Callable[..., Server], tmp_path: Path) -> None:
    with socket.socket() as holder:  # another process's listener: never shared (SO_REUSEPORT is off)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            process.ServingStartError, match=f"cannot listen: cannot listen for gRPC on 127.0.0.1:{port}"
        ):
            serve([variant(tmp_path, "stable", "3", STABLE_W)], grpc_port=port)


def test_a_reload_is_seen_over_grpc_on_the_same_listener(serve: Callable[..., Server], tmp_path: Path) -> None:
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], grpc_port=0)
    client = triton(srv)
    assert triton_infer(client, [[1.0, 1.0, 1.0]], model_version="3").as_numpy("score").tolist() == [[6.0]]
    srv.config_path.write_text(json.dumps(dict(srv.config, variants=[variant(tmp_path, "stable", "5", CANARY_W, 1.0)])))
    os.kill(srv.pid, signal.SIGHUP)
    serving_client.wait_versions(srv.url, "fraud-api", ["5"], timeout=10)
    reply = triton_infer(client, [[1.0, 1.0, 1.0]]).get_response()  # the channel opened before the reload
    assert reply.model_version == "5" and np.frombuffer(reply.raw_output_contents[0], "<f4").tolist() == [4.0]
    assert triton_infer(client, [[1.0, 1.0, 1.0]], model_version="5").get_response().model_version == "5"
    code, message = refusal(lambda: triton_infer(client, [[1.0, 1.0, 1.0]], model_version="3"))
    assert (code, message) == ("StatusCode.NOT_FOUND", "model 'fraud-api' has no version '3' (versions: 5)")
    assert list(client.get_model_metadata("fraud-api").versions) == ["5"]


def test_grpc_callers_are_authenticated_like_rest_callers(serve: Callable[..., Server], tmp_path: Path) -> None:
    from tests.unit.test_serving_auth import AUDIENCE, IdentityProvider

    keys = tmp_path / "keys"
    keys.write_text("first-key-0123456789\n")
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], grpc_port=0,
                auth={"method": "api_key", "api_key_file": str(keys)})  # fmt: skip
    client = triton(srv)
    code, message = refusal(lambda: triton_infer(client, ROWS))
    assert code == "StatusCode.UNAUTHENTICATED" and "X-API-Key" in message
    code, _message = refusal(lambda: triton_infer(client, ROWS, headers={"x-api-key": "first-key-012345678"}))
    assert code == "StatusCode.UNAUTHENTICATED"
    assert refusal(lambda: client.get_model_metadata("fraud-api"))[0] == "StatusCode.UNAUTHENTICATED"
    for headers in ({"x-api-key": "first-key-0123456789"}, {"authorization": "Bearer first-key-0123456789"}):
        assert triton_infer(client, ROWS, headers=headers).as_numpy("score").ravel().tolist() == pytest.approx(
            [score(STABLE_W, r) for r in ROWS]
        )
    assert client.is_server_ready() and client.is_model_ready("fraud-api")  # health is open by default
    with pytest.raises(grpc.RpcError) as caught:
        stub(srv).ModelInfer(pb.ModelInferRequest(model_name="fraud-api"))
    assert dict(caught.value.trailing_metadata() or ())["www-authenticate"].startswith("ApiKey realm=")
    assert srv.metric("mlspec_auth_requests_total", outcome="ok") == 2
    assert srv.metric("mlspec_grpc_responses_total", method="ModelInfer", code="UNAUTHENTICATED") == 3
    assert "key-0123456789" not in srv.log.read_text()

    idp = IdentityProvider()  # a token for another audience: valid, but not for this endpoint
    try:
        settings = {"method": "oidc", "issuer": idp.issuer, "audiences": [AUDIENCE]}
        other = serve([variant(tmp_path, "stable", "3", STABLE_W)], grpc_port=0, auth=settings)
        client = triton(other)
        bearer = {"authorization": f"Bearer {idp.token(aud='someone-else')}"}
        code, message = refusal(lambda: triton_infer(client, ROWS, headers=bearer))
        assert code == "StatusCode.PERMISSION_DENIED" and "audience" in message
        bearer = {"authorization": f"Bearer {idp.token()}"}
        assert triton_infer(client, ROWS, headers=bearer).get_response().model_version == "3"
    finally:
        idp.server.shutdown()
