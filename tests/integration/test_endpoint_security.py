"""Endpoint authentication and TLS on clusters: the Istio objects that enforce them, validated against Istio's
CRDs; the refusals where nothing would enforce them; and policies and reports that judge the enforcement."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import CliResult, copy_platform
from tests.integration.test_refused_fields import platform
from tests.k8s_schemas import validate_crd

ISTIO = Path(__file__).resolve().parents[1] / "fixtures" / "schemas" / "istio"
CRDS = {
    "PeerAuthentication": ISTIO / "security.istio.io_peerauthentications.yaml",
    "RequestAuthentication": ISTIO / "security.istio.io_requestauthentications.yaml",
    "AuthorizationPolicy": ISTIO / "security.istio.io_authorizationpolicies.yaml",
}
ISSUER = "https://login.microsoftonline.com/uaebank.onmicrosoft.com/v2.0"


def rendered(cli: Callable[..., CliResult], root: Path, env: str, out: Path) -> CliResult:
    return cli("render", "--env", env, "-o", str(out), cwd=root)


def mesh_objects(out: Path, env: str, deployment: str) -> dict[str, dict[str, Any]]:
    documents = yaml.safe_load_all((out / env / "kubernetes" / f"{deployment}.yaml").read_text())
    return {d["kind"]: d for d in documents if d and d["kind"] in (*CRDS, "InferenceService")}


def test_oidc_endpoints_are_guarded_by_the_mesh_with_the_environments_issuer(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = copy_platform(tmp_path)
    result = rendered(cli, root, "prod", tmp_path / "out")
    assert result.code == 0, result.out + result.err
    found = mesh_objects(tmp_path / "out", "prod", "fraud-api")
    for kind, crd in CRDS.items():
        assert validate_crd(found[kind], str(crd)) == [], kind
    selector = {"matchLabels": {"mlspec.dev/deployment": "fraud-api"}}
    # the selected pods are the InferenceService's: its predictor carries the label
    assert found["InferenceService"]["spec"]["predictor"]["labels"] == selector["matchLabels"]
    assert found["PeerAuthentication"]["spec"] == {"selector": selector, "mtls": {"mode": "STRICT"}}
    (rule,) = found["RequestAuthentication"]["spec"]["jwtRules"]
    assert rule["issuer"] == ISSUER and rule["audiences"] == ["payments-gateway"]
    policy = found["AuthorizationPolicy"]["spec"]
    assert policy["action"] == "ALLOW" and policy["selector"] == selector
    # every request needs a verified token, except probes and scrapes of the open routes
    assert policy["rules"][0] == {"from": [{"source": {"requestPrincipals": ["*"]}}]}
    assert policy["rules"][1]["to"][0]["operation"]["methods"] == ["GET"]
    assert "/metrics" in policy["rules"][1]["to"][0]["operation"]["paths"]
    assert not any("/infer" in path for path in policy["rules"][1]["to"][0]["operation"]["paths"])
    namespace = next(yaml.safe_load_all((tmp_path / "out/prod/kubernetes/namespace.yaml").read_text()))
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def test_mtls_and_private_endpoints(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    root = platform(
        tmp_path / "p", "Deployment", "model: {name: fraud-detector}",
        "model: {name: fraud-detector}\n  auth: {method: mtls}\n  endpoint: {visibility: private}",
    )  # fmt: skip
    result = rendered(cli, root, "dev", tmp_path / "out")
    assert result.code == 0, result.out
    found = mesh_objects(tmp_path / "out", "dev", "fraud-api")
    assert "RequestAuthentication" not in found
    rules = found["AuthorizationPolicy"]["spec"]["rules"]
    assert rules[0] == {"from": [{"source": {"namespaces": ["ml-dev"], "principals": ["*"]}}]}
    assert found["PeerAuthentication"]["spec"]["mtls"]["mode"] == "STRICT"
    for kind, crd in CRDS.items():
        if kind in found:
            assert validate_crd(found[kind], str(crd)) == [], kind


def errors(out: str) -> list[tuple[str, str]]:
    return re.findall(r"^(\S+:\d+:\d+): error\[([a-z-]+)\]", out.replace("\\", "/"), re.MULTILINE)


def test_authentication_nothing_would_enforce_fails_the_render_at_the_method(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    # API keys on KServe: mlspec's runtime checks the keys of the named Secret, and makes none itself
    root = platform(
        tmp_path / "a", "Deployment", "model: {name: fraud-detector}",
        "model: {name: fraud-detector}\n  auth: {method: api_key}",
    )  # fmt: skip
    result = rendered(cli, root, "dev", tmp_path / "out-a")
    assert result.code == 1 and [code for _, code in errors(result.out)] == ["missing-api-keys"], result.out
    assert rendered(cli, root, "local", tmp_path / "out-a2").code == 0  # the local platform makes a key
    keyed = platform(
        tmp_path / "k", "Deployment", "model: {name: fraud-detector}",
        "model: {name: fraud-detector}\n  auth: {method: api_key, api_keys: secret://dev/fraud-keys}",
    )  # fmt: skip
    result = rendered(cli, keyed, "dev", tmp_path / "out-k")
    assert result.code == 0, result.out
    found = mesh_objects(tmp_path / "out-k", "dev", "fraud-api")
    model = found["InferenceService"]["spec"]["predictor"]["model"]
    assert model["runtime"] == "mlspec"
    settings = json.loads(next(e["value"] for e in model["env"] if e["name"] == "MLSPEC_SERVING"))
    assert settings["auth"] == {
        "method": "api_key", "api_key_env": "MLSPEC_SECRET_DEV_FRAUD_KEYS", "open_routes": ["health", "metrics"]
    }  # fmt: skip
    key_env = next(e for e in model["env"] if e["name"] == "MLSPEC_SECRET_DEV_FRAUD_KEYS")
    assert key_env["valueFrom"] == {"secretKeyRef": {"name": "mlspec-dev-fraud-keys", "key": "value"}}
    # the mesh still requires a workload certificate (STRICT) but not a token: the runtime checks the key
    assert "RequestAuthentication" not in found
    # client certificates on the laptop: the local server does not verify them
    root = platform(
        tmp_path / "m", "Deployment", "model: {name: fraud-detector}", "model: {name: fraud-detector}\n  auth: {method: mtls}"
    )  # fmt: skip
    result = rendered(cli, root, "local", tmp_path / "out-m")
    assert result.code == 1 and "does not verify client certificates" in result.out, result.out
    ((where, code),) = errors(result.out)
    assert code == "unsupported-by-target" and where.startswith("specs/deployment.yaml:")
    # OIDC on a shared environment that names no issuer: nothing could verify a token
    root = platform(tmp_path / "o")
    dev = root / "environments/dev.yaml"
    dev.write_text(re.sub(r"  identity: .*\n", "", dev.read_text()))
    result = rendered(cli, root, "dev", tmp_path / "out-o")
    assert result.code == 1 and [code for _, code in errors(result.out)] == ["missing-identity"], result.out


def test_policy_and_report_judge_the_enforcement_not_the_declaration(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    root = copy_platform(tmp_path)
    report = cli("report", "compliance", "--env", "prod", "--format", "md", cwd=root)
    assert report.code in (0, 1), report.out + report.err
    fraud = next(line for line in report.out.splitlines() if "Deployment/fraud-api" in line)
    assert "mesh mTLS (STRICT)" in fraud and "auth: oidc by mesh (Istio) RequestAuthentication" in fraud
    local = cli("report", "compliance", "--env", "local", "--format", "md", cwd=root)
    fraud_local = next(line for line in local.out.splitlines() if "Deployment/fraud-api" in line)
    # the laptop's model server checks tokens itself and serves TLS with the environment's CA; the local
    # environment only prefers TLS for its stores, and the row says so
    assert "auth: oidc by model server" in fraud_local and "TLS (the environment's local CA)" in fraud_local
    assert "environment tls: preferred" in fraud_local and "FAIL" in fraud_local
