"""The REST model server against the Open Inference Protocol's own OpenAPI document.

The document (tests/fixtures/schemas/oip/open_inference_rest.yaml, copied from kserve/open-inference-protocol) is
read by two kinds of client, each against a real server process on loopback:

* Schemathesis generates calls from it (schema-valid and schema-breaking ones, its coverage cases, calls naming
  models and versions that are not served, and well-formed requests for the served model) and checks every answer
  against it: no server error, no undocumented status or content type, every body as its schema says. The answers
  to the well-formed requests are checked against onnxruntime run in-process.
* datamodel-code-generator generates a client from it at test time (pydantic models and an HTTPX2 client package,
  into a temporary folder); the test calls the server with it as any OIP client would.

The document writes its paths with literal ``${MODEL_NAME}`` and ``${MODEL_VERSION}`` placeholders (declared as path
parameters): :func:`oip_document` turns them into OpenAPI path templates first. Both clients run against a server
with API-key authentication too; calls without the key get 401.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

ort = pytest.importorskip("onnxruntime")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import Case, GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance, status_code_conformance  # noqa: E402

from mlspec.serving import client  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402
from tests.unit.test_serving import CANARY_W, FEATURES, STABLE_W, Server, variant  # noqa: E402

OIP_REST = FIXTURES / "schemas" / "oip" / "open_inference_rest.yaml"
DEPLOYMENT, MODEL_NAME = "fraud-api", "fraud-detector"  # the names the serve fixture gives the deployment
NAMES = (DEPLOYMENT, MODEL_NAME)  # a model is served under both
UNKNOWN_NAME, UNKNOWN_VERSION = "no-such-model", "999"
KEY = "oip-test-key-0123456789abcdef"
EXAMPLES = 50  # generated calls per operation and kind of call (the coverage cases come on top)
OPEN_KINDS = ("/v2/health/", "/ready")  # paths answered without credentials (the auth default: health routes)


def oip_document(names: tuple[str, ...] = (), versions: tuple[str, ...] = ()) -> dict[str, Any]:
    """The OIP REST document with its ``${MODEL_NAME}``/``${MODEL_VERSION}`` placeholders turned into OpenAPI path
    templates; given ``names`` and ``versions``, those path parameters take only these values."""
    document: dict[str, Any] = yaml.safe_load(OIP_REST.read_text())
    allowed = {"MODEL_NAME": names, "MODEL_VERSION": versions}
    paths = {}
    for path, item in document["paths"].items():
        for parameter in item.get("parameters", []):
            if allowed[parameter["name"]]:
                parameter["schema"] = {**parameter["schema"], "enum": list(allowed[parameter["name"]])}
        paths[re.sub(r"\$\{(\w+)\}", r"{\1}", path)] = item
    document["paths"] = paths
    return document


def write_document(tmp_path: Path, names: tuple[str, ...] = (), versions: tuple[str, ...] = ()) -> Path:
    """:func:`oip_document` written to ``tmp_path`` (JSON)."""
    path = tmp_path / "open_inference_rest.json"
    path.write_text(json.dumps(oip_document(names, versions), indent=1))
    return path


def test_the_documents_placeholders_become_path_templates(tmp_path: Path) -> None:
    def undeclared(document: dict[str, Any]) -> list[str]:
        """Every path parameter that its path does not template (``${NAME}`` is literal text in a path)."""
        return [
            f"{path} {parameter['name']}"
            for path, item in document["paths"].items()
            for parameter in item.get("parameters", [])
            if parameter["name"] not in re.findall(r"(?<!\$)\{(\w+)\}", path)
        ]

    original = yaml.safe_load(OIP_REST.read_text())
    assert len(undeclared(original)) == 6  # MODEL_NAME and MODEL_VERSION of the three model paths
    written = write_document(tmp_path, ("m",), ("1",))
    schemathesis.openapi.from_path(written).validate()  # an OpenAPI 3.0 document still
    converted = json.loads(written.read_text())
    assert undeclared(converted) == []
    assert sorted(converted["paths"]) == [
        "/v2/",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}",
        "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer",
        "/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/ready",
    ]
    parameters = converted["paths"]["/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]["parameters"]
    assert [p["schema"] for p in parameters] == [{"type": "string", "enum": ["m"]}, {"type": "string", "enum": ["1"]}]
    # everything else is the document as published
    assert {k: v for k, v in converted.items() if k != "paths"} == {k: v for k, v in original.items() if k != "paths"}


# --- the served deployment -----------------------------------------------------------------------------


@dataclass
class Deployment:
    """A served deployment (two versions behind an A/B rollout), the reference for each version, and the
    credentials its callers send."""

    srv: Server
    sessions: dict[str, Any]  # version -> onnxruntime session of its ONNX file
    weights: dict[str, list[float]]  # version -> the linear model's weights (for the error bound)
    headers: dict[str, str]

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self.sessions)

    def check_scores(self, version: str, rows: np.ndarray, answer: Any) -> None:
        """``answer`` (an OIP output's data) is what onnxruntime computes for ``rows`` on ``version``, up to FP32
        rounding (bounded by the magnitude of the terms of each row's dot product)."""
        expected = self.sessions[version].run(None, {"input": rows})[0].astype(np.float64).ravel()
        bound = np.abs(rows.astype(np.float64)) @ np.abs(np.array(self.weights[version])) + 1.0
        actual = np.array(answer, dtype=np.float64).ravel()
        assert actual.shape == expected.shape
        assert (np.abs(actual - expected) <= 1e-6 * bound).all(), (rows, actual, expected)


def deploy(serve: Callable[..., Server], tmp_path: Path, *, auth: bool) -> Deployment:
    """Serve versions 3 and 4 of the model (A/B, half the traffic each), with API keys when ``auth``."""
    variants = [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "challenger", "4", CANARY_W, bias=0.5)]
    rollout = {"strategy": "ab", "variants": [{"alias": "stable", "weight": 50}, {"alias": "challenger", "weight": 50}]}
    extra: dict[str, Any] = {}
    if auth:
        keys = tmp_path / "api-keys"
        keys.write_text(KEY + "\n")
        extra["auth"] = {"method": "api_key", "api_key_file": str(keys)}
    srv = serve(variants, rollout, **extra)
    client.wait_ready(srv.url, timeout=30)
    sessions = {v["version"]: ort.InferenceSession(v["path"], providers=["CPUExecutionProvider"]) for v in variants}
    weights = {"3": STABLE_W, "4": CANARY_W}
    return Deployment(srv, sessions, weights, {"X-API-Key": KEY} if auth else {})


def rows_of(body: dict[str, Any]) -> np.ndarray:
    """The [N, 3] float32 rows of a well-formed infer request: one 'input' tensor, or one input per feature."""
    inputs = body["inputs"]
    if len(inputs) == 1 and inputs[0]["name"] == "input":
        return np.array(inputs[0]["data"], dtype=np.float64).reshape(-1, len(FEATURES)).astype(np.float32)
    columns = {tensor["name"]: np.array(tensor["data"], dtype=np.float64).reshape(-1) for tensor in inputs}
    return np.stack([columns[name] for name in FEATURES], axis=1).astype(np.float32)


# |x| <= 1e6: the linear test models cannot overflow FP32 on these. (Finite inputs that make a model answer NaN or
# infinity are a model failure, answered 500 by design: see test_serving.py's canary that answers NaN.)
VALUES = st.floats(-1e6, 1e6, allow_nan=False, width=32)
FEATURE_TYPES = (
    ("FP32", VALUES),
    ("FP64", VALUES),
    ("INT64", st.integers(-(2**31), 2**31)),
    ("UINT8", st.integers(0, 255)),
    ("BOOL", st.booleans()),
)


@st.composite
def infer_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed infer requests for the served model: one 'input' tensor [N, 3] (nested or flat data), or one
    input per feature in any order (numeric datatypes, shape [N] or [N, 1]); with or without id, outputs and
    parameters."""
    n = draw(st.integers(1, 4))
    if draw(st.booleans()):
        rows = draw(st.lists(st.lists(VALUES, min_size=3, max_size=3), min_size=n, max_size=n))
        data = rows if draw(st.booleans()) else [x for row in rows for x in row]
        inputs = [{"name": "input", "shape": [n, 3], "datatype": "FP32", "data": data}]
    else:
        inputs = []
        for name in draw(st.permutations(FEATURES)):
            datatype, values = draw(st.sampled_from(FEATURE_TYPES))
            shape = [n] if draw(st.booleans()) else [n, 1]
            inputs.append(
                {
                    "name": name,
                    "shape": shape,
                    "datatype": datatype,
                    "data": draw(st.lists(values, min_size=n, max_size=n)),
                }
            )
    body: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=12))
    if draw(st.booleans()):
        body["outputs"] = [{"name": "score"}]
    if draw(st.booleans()):
        body["parameters"] = {"priority": draw(st.integers(0, 9))}
    return body


# --- Schemathesis ----------------------------------------------------------------------------------------


def names_served(case: Case[Any], dep: Deployment) -> bool:
    """Whether the case's path names a served model and version (always, for a path without parameters)."""
    params = case.path_parameters or {}
    return bool(params.get("MODEL_NAME", DEPLOYMENT) in NAMES and params.get("MODEL_VERSION", "3") in dep.versions)


def is_infer(case: Case[Any]) -> bool:
    return str(case.operation.path).endswith("/infer")


def error_message(body: Any) -> str:
    """The message of an OIP error body ({"error": "..."}, the document's *_error_response schemas)."""
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def check_call(case: Case[Any], dep: Deployment, seen: Counter[tuple[str, int]]) -> None:
    """Send ``case`` with the deployment's credentials and check the answer against the document, and more."""
    response = case.call(base_url=dep.srv.url, headers=dep.headers)
    status = response.status_code
    seen[(case.operation.label, status)] += 1
    excluded: list[Callable[..., Any]] = []
    if is_infer(case):
        # The request schema describes the tensors of any model; a schema-valid request whose tensors do not fit
        # the served model ([N, 3] FP32 'input', or inputs a, b and c) is refused with 400, which the document
        # declares for it, so "valid data must be accepted" does not apply.
        excluded.append(positive_data_acceptance)
    served = names_served(case, dep)
    if not served:
        # The document declares no answer for a model it does not serve (its operations list 200, and 400 for
        # infer); the OIP text asks for "an HTTP error status", and the server answers 404 as KServe does, with
        # the document's error object (checked below).
        excluded.append(status_code_conformance)
    transport = {"base_url": dep.srv.url, "headers": dep.headers}
    case.validate_response(response, excluded_checks=excluded, headers=dep.headers, transport_kwargs=transport)
    if not served:
        assert status == 404, (case.path_parameters, status, response.content)
        error_message(response.json())
        return
    if case.method != case.operation.method.upper():
        assert status == 405 and response.headers["allow"] == [case.operation.method.upper()]
        return
    if not is_infer(case):
        assert status == 200, (case.formatted_path, status, response.content)
    elif status == 200:
        answer = response.json()
        body = case.body
        assert isinstance(body, dict)
        version = case.path_parameters["MODEL_VERSION"]
        assert answer["model_name"] == DEPLOYMENT and answer["model_version"] == version
        assert answer.get("id") == body.get("id")
        [output] = answer["outputs"]
        assert output["name"] == "score" and output["datatype"] == "FP32"
        rows = rows_of(body)
        assert output["shape"] == [len(rows), 1]
        dep.check_scores(version, rows, output["data"])
    else:
        assert status == 400, (status, response.content)
        error_message(response.json())


def for_each_example(strategy: st.SearchStrategy[Case[Any]], check: Callable[[Case[Any]], None], examples: int) -> None:
    """Run ``check`` on up to ``examples`` cases drawn from ``strategy`` (the same ones on every run)."""

    # deadline=None: a call's time on a shared machine says nothing; derandomize: the same calls on every run
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        check(case)

    run()


def served_requests(operation: Any, dep: Deployment) -> st.SearchStrategy[Case[Any]]:
    """Well-formed infer requests for the served model, to any of its names and versions."""

    def case(name: str, version: str, body: dict[str, Any]) -> Case[Any]:
        made: Case[Any] = operation.Case(path_parameters={"MODEL_NAME": name, "MODEL_VERSION": version}, body=body)
        return made

    return st.builds(case, st.sampled_from(NAMES), st.sampled_from(dep.versions), infer_bodies())


def explore(dep: Deployment, document: Path, check: Callable[[Case[Any]], None], examples: int) -> None:
    """Every operation of ``document``, called with what Schemathesis generates from it (schema-valid and
    schema-breaking calls, calls naming a model or version that is not served, its coverage cases) and, for
    infer, well-formed requests for the served model."""
    schema = schemathesis.openapi.from_path(document)
    for result in schema.get_all_operations():
        operation = result.ok()
        strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
        if len(operation.path_parameters):  # the health paths have nothing to break
            strategies += [
                operation.as_strategy(GenerationMode.NEGATIVE),
                operation.as_strategy(path_parameters={"MODEL_NAME": UNKNOWN_NAME}),
                operation.as_strategy(path_parameters={"MODEL_VERSION": UNKNOWN_VERSION}),
            ]
        if operation.method.upper() == "POST":
            strategies.append(served_requests(operation, dep))
        for strategy in strategies:
            for_each_example(strategy, check, examples)
        generation = schema.config.generation_for(operation=operation, phase="coverage")
        for case in schema.iter_coverage_cases(
            operation, generation_modes=list(GenerationMode), generation_config=generation
        ):
            check(case)


def assert_everything_answered(seen: Counter[tuple[str, int]], examples: int) -> None:
    """Each operation answered 200, infer also 400 and 404, some undeclared method 405, nothing 5xx."""
    by_operation: dict[str, set[int]] = {}
    for (label, status), _count in seen.items():
        by_operation.setdefault(label, set()).add(status)
    assert len(by_operation) == 6 and all(200 in statuses for statuses in by_operation.values()), by_operation
    infer = by_operation["POST /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer"]
    assert {200, 400, 404, 405} <= infer, infer
    assert not [key for key in seen if key[1] >= 500], seen
    assert seen[("POST /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer", 200)] >= examples // 2


def test_schemathesis_finds_nothing_the_document_forbids(serve: Callable[..., Server], tmp_path: Path) -> None:
    dep = deploy(serve, tmp_path, auth=False)
    document = write_document(tmp_path, NAMES, dep.versions)
    seen: Counter[tuple[str, int]] = Counter()
    explore(dep, document, lambda case: check_call(case, dep, seen), EXAMPLES)
    assert_everything_answered(seen, EXAMPLES)
    assert dep.srv.metric("mlspec_request_errors_total") == 0


def test_schemathesis_with_an_api_key_and_without_one(serve: Callable[..., Server], tmp_path: Path) -> None:
    dep = deploy(serve, tmp_path, auth=True)
    document = write_document(tmp_path, NAMES, dep.versions)
    seen: Counter[tuple[str, int]] = Counter()
    explore(dep, document, lambda case: check_call(case, dep, seen), EXAMPLES // 2)
    assert_everything_answered(seen, EXAMPLES // 2)

    refused: Counter[str] = Counter()

    def check_anonymous(case: Case[Any]) -> None:
        """A call without credentials: 401 with the challenge and the OIP error object, but on health paths."""
        response = case.call(base_url=dep.srv.url)
        if any(kind in case.operation.path for kind in OPEN_KINDS):  # probes need no credentials
            case.validate_response(response)
            assert response.status_code == 200
            return
        # The document declares no security scheme and no 401 answer: the status is checked here instead.
        case.validate_response(response, excluded_checks=[status_code_conformance])
        assert response.status_code == 401, (case.formatted_path, response.status_code, response.content)
        assert response.headers["www-authenticate"] == [f'ApiKey realm="{DEPLOYMENT}", header="X-API-Key"']
        assert "X-API-Key" in error_message(response.json())
        refused[case.operation.label] += 1

    schema = schemathesis.openapi.from_path(document)
    for result in schema.get_all_operations():
        operation = result.ok()
        for_each_example(operation.as_strategy(GenerationMode.POSITIVE), check_anonymous, 10)
        if operation.method.upper() == "POST":  # a broken or a well-formed body: refused before it is read
            served = {"MODEL_NAME": DEPLOYMENT, "MODEL_VERSION": "3"}
            for_each_example(
                operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=served), check_anonymous, 10
            )
            for_each_example(served_requests(operation, dep), check_anonymous, 10)
    assert set(refused) == {
        "GET /v2/",
        "GET /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}",
        "POST /v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}/infer",
    }
    assert dep.srv.metric("mlspec_http_responses_total", code="401") == sum(refused.values())
    assert dep.srv.metric("mlspec_http_responses_total", code="500") == 0


# --- what Schemathesis found -----------------------------------------------------------------------------


def test_inputs_beyond_fp32_are_the_callers_mistake_not_a_model_failure(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """NaN, infinity, or a number beyond FP32's range (sent as JSON, or as binary tensor data) reached the model as
    NaN or infinity: the answer was a 500 counted against the variant, so any caller could roll a healthy canary
    back. It is refused with 400 now, before any variant is chosen."""
    srv = serve(
        [variant(tmp_path, "stable", "3", STABLE_W), variant(tmp_path, "canary", "4", CANARY_W)],
        {
            "strategy": "canary",
            "steps": [50, 100],
            "analysis": {"max_error_rate": 0.01, "min_requests": 10, "max_p99_ms": 5000, "interval": "5m"},
        },
    )
    client.wait_ready(srv.url, timeout=30)
    tensor = {"name": "input", "shape": [1, 3], "datatype": "FP32"}
    feature = [{"name": name, "shape": [1], "datatype": "FP64", "data": [1.0]} for name in FEATURES]
    bodies = [
        json.dumps({"inputs": [{**tensor, "data": [1e39, 0.0, 0.0]}]}).encode(),  # a float64, infinity as FP32
        json.dumps({"inputs": [{**tensor, "data": [[-3.5e38, 1.0, 2.0]]}]}).encode(),
        b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [NaN, 1, 2]}]}',
        b'{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, -Infinity, 2]}]}',
        json.dumps({"inputs": [feature[0], {**feature[1], "data": [1e300]}, feature[2]]}).encode(),
    ]
    for _ in range(8):
        for raw in bodies:
            status, err = srv.request("POST", "/v2/models/fraud-api/infer", raw)
            assert status == 400, err
            assert re.fullmatch(
                r"input '(input|b)' holds NaN, infinity or a number beyond the FP32 range.*", err["error"]
            )
    # binary tensor data: infinity's own bit pattern
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 12}}]}).encode()
    raw = head + np.array([1.0, np.inf, 2.0], dtype="<f4").tobytes()
    status, err = srv.request(
        "POST", "/v2/models/fraud-api/infer", raw, {"Inference-Header-Content-Length": str(len(head))}
    )
    assert status == 400 and "NaN, infinity" in err["error"]
    rollout = srv.status()
    assert rollout["phase"] == "progressing" and rollout["weights"]["canary"] == 50.0, rollout
    assert srv.metric("mlspec_http_responses_total", code="500") == 0
    assert srv.metric("mlspec_http_responses_total", code="400") == 8 * len(bodies) + 1
    assert srv.metric("mlspec_request_errors_total") == 0
    assert srv.infer([[1.0, 2.0, 3.0]])[0] == 200  # finite inputs are answered as before


# --- a client generated from the document --------------------------------------------------------------


@dataclass
class Generated:
    """The modules datamodel-code-generator wrote: the document's models, the client package and its errors."""

    models: ModuleType
    client: ModuleType
    errors: ModuleType


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """A client generated from the OIP document (pydantic v2 models and an HTTPX2 client: the runtime
    dependencies of the generated code, httpx2, pydantic and typing-extensions, are pinned already)."""
    generator = pytest.importorskip("datamodel_code_generator")
    out = tmp_path_factory.mktemp("oip_generated")
    generator.generate(
        write_document(out),
        input_file_type=generator.InputFileType.OpenAPI,
        output=out / "oip_rest_models.py",
        output_model_type=generator.DataModelType.PydanticV2BaseModel,
        generate_client=generator.ClientType.HTTPX2,
        client_output=out / "oip_rest_client",
        client_package="oip_rest_client",
        client_model_package="oip_rest_models",
        client_default_base_url="http://127.0.0.1:8601",  # the document names no server; each test gives its own
        formatters=[generator.Formatter.BUILTIN],
        disable_timestamp=True,
    )
    sys.path.insert(0, str(out))
    try:
        yield Generated(
            importlib.import_module("oip_rest_models"),
            importlib.import_module("oip_rest_client"),
            importlib.import_module("oip_rest_client.errors"),
        )
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == "oip_rest_models" or n.split(".")[0] == "oip_rest_client"]:
            del sys.modules[name]


ROWS = [[0.5, -1.0, 2.0], [3.0, 0.25, 1.0]]


def health(api: Any, version: str | None = None) -> tuple[int, Any]:
    """A health answer through the generated client. The document gives the health answers no content, so the
    client refuses any body; the OIP text gives them one ({"live": true}, {"name": ..., "ready": true}, as KServe
    answers), and so does this server: the client's raw responses read it."""
    raw = api.with_raw_response
    if version is None:
        reply = raw.get_v2_health_live()
    else:
        reply = raw.get_v2_models___model_name_versions___model_version_ready(
            MODEL_NAME=DEPLOYMENT, MODEL_VERSION=version
        )
    return reply.info.status_code, reply.json()


def call_every_operation(api: Any, gen: Generated, dep: Deployment) -> None:
    """Server metadata, health, and for each name and version model metadata, ready and infer; every answer as
    the generated models read it, the scores as onnxruntime computes them."""
    models = gen.models
    server = api.get_v2()
    assert isinstance(server, models.MetadataServerResponse)
    assert server.name == "mlspec" and "binary_tensor_data" in server.extensions
    assert health(api) == (200, {"live": True})
    for name in NAMES:
        for version in dep.versions:
            meta = api.get_v2_models___model_name_versions___model_version(MODEL_NAME=name, MODEL_VERSION=version)
            assert isinstance(meta, models.MetadataModelResponse)
            assert (meta.name, meta.versions, meta.platform) == (DEPLOYMENT, [version], "onnxruntime_onnx")
            assert meta.inputs == [models.MetadataTensor(name="input", datatype="FP32", shape=[-1, 3])]
            assert meta.outputs == [models.MetadataTensor(name="score", datatype="FP32", shape=[-1, 1])]
            assert health(api, version) == (200, {"name": DEPLOYMENT, "ready": True})
            request = models.InferenceRequest(
                id=f"{name}-{version}",
                inputs=[models.RequestInput(name="input", shape=[2, 3], datatype="FP32", data=models.TensorData(ROWS))],
                outputs=[models.RequestOutput(name="score")],
            )
            answer = api.post_v2_models___model_name_versions___model_version_infer(
                MODEL_NAME=name, MODEL_VERSION=version, body=request
            )
            assert isinstance(answer, models.InferenceResponse)
            assert (answer.model_name, answer.model_version, answer.id) == (DEPLOYMENT, version, f"{name}-{version}")
            [output] = answer.outputs
            assert (output.name, output.datatype, output.shape) == ("score", "FP32", [2, 1])
            dep.check_scores(version, np.array(ROWS, dtype=np.float32), output.data.root)
    # one input per feature, in the document's models too
    columns = np.array(ROWS).T.tolist()
    per_feature = models.InferenceRequest(
        inputs=[
            models.RequestInput(name=name, shape=[2], datatype="FP64", data=models.TensorData(column))
            for name, column in zip(FEATURES, columns, strict=True)
        ]
    )
    answer = api.post_v2_models___model_name_versions___model_version_infer(
        MODEL_NAME=MODEL_NAME, MODEL_VERSION="4", body=per_feature
    )
    dep.check_scores("4", np.array(ROWS, dtype=np.float32), answer.outputs[0].data.root)
    assert answer.id is None
    # the errors the document declares come back as its error object
    with pytest.raises(gen.errors.BadRequestError) as bad:
        api.post_v2_models___model_name_versions___model_version_infer(
            MODEL_NAME=DEPLOYMENT, MODEL_VERSION="3", body=models.InferenceRequest(inputs=[])
        )
    assert isinstance(bad.value.body, models.InferenceErrorResponse) and "inputs" in bad.value.body.error
    with pytest.raises(gen.errors.NotFoundError) as missing:
        api.get_v2_models___model_name_versions___model_version(MODEL_NAME=UNKNOWN_NAME, MODEL_VERSION="3")
    assert "unknown model 'no-such-model'" in error_message(json.loads(missing.value.body))


def test_a_client_generated_from_the_document_calls_the_server(
    serve: Callable[..., Server], tmp_path: Path, generated: Generated
) -> None:
    dep = deploy(serve, tmp_path, auth=False)
    with generated.client.Client(base_url=dep.srv.url, max_retries=0) as oip:
        call_every_operation(oip.default, generated, dep)
    assert dep.srv.metric("mlspec_http_responses_total", code="500") == 0


def test_the_generated_client_with_an_api_key_and_without_one(
    serve: Callable[..., Server], tmp_path: Path, generated: Generated
) -> None:
    dep = deploy(serve, tmp_path, auth=True)
    with generated.client.Client(base_url=dep.srv.url, max_retries=0, default_headers=dep.headers) as oip:
        call_every_operation(oip.default, generated, dep)
    request = generated.models.InferenceRequest(
        inputs=[
            generated.models.RequestInput(
                name="input", shape=[1, 3], datatype="FP32", data=generated.models.TensorData([ROWS[0]])
            )
        ]
    )
    with generated.client.Client(base_url=dep.srv.url, max_retries=0) as anonymous:
        api = anonymous.default
        calls: list[Callable[[], Any]] = [
            api.get_v2,
            lambda: api.get_v2_models___model_name_versions___model_version(MODEL_NAME=DEPLOYMENT, MODEL_VERSION="3"),
            lambda: api.post_v2_models___model_name_versions___model_version_infer(
                MODEL_NAME=MODEL_NAME, MODEL_VERSION="4", body=request
            ),
        ]
        for call in calls:
            with pytest.raises(generated.errors.AuthenticationError) as refused:
                call()
            assert refused.value.status_code == 401
            assert refused.value.headers.get("WWW-Authenticate") == f'ApiKey realm="{DEPLOYMENT}", header="X-API-Key"'
        assert health(api) == (200, {"live": True})  # probes need no key
        assert health(api, "4") == (200, {"name": DEPLOYMENT, "ready": True})
    assert dep.srv.metric("mlspec_http_responses_total", code="401") == 3
    assert dep.srv.metric("mlspec_http_responses_total", code="500") == 0
