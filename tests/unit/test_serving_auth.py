"""Authentication on the model server: API keys and OIDC bearer tokens, against a real server process.

The test is its own identity provider: it makes RSA and EC keys, serves their JWKS and the OpenID discovery
document on loopback, and mints tokens; every refused case has its own assertion.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

jwt = pytest.importorskip("jwt")
pytest.importorskip("onnxruntime")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from mlspec.serving.auth import AuthConfig, AuthConfigError  # noqa: E402
from tests.unit.test_serving import STABLE_W, Server, score, variant  # noqa: E402

ROW = [1.0, 2.0, 3.0]
AUDIENCE = "payments-gateway"


class IdentityProvider:
    """A JWKS and discovery document on loopback, and the keys to mint tokens with."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: list[tuple[str, Any, str]] = [("rsa-1", self.rsa, "RS256"), ("ec-1", self.ec, "ES256")]
        self.fetches = 0
        provider = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/keys"}
                elif self.path == "/keys":
                    provider.fetches += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key, alg in self.published:
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def token(self, *, kid: str = "rsa-1", key: Any = None, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "sub": "svc-payments", "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return str(jwt.encode(payload, key or self.rsa, algorithm=alg, headers={"kid": kid}))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(issuer: str, alg: str, key: bytes = b"") -> str:
    """A token with ``alg`` none (no signature) or HS256 keyed with ``key`` (e.g. the issuer's public key)."""
    now = int(time.time())
    head = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps({"iss": issuer, "aud": AUDIENCE, "exp": now + 300, "sub": "x"}).encode())
    signing = f"{head}.{body}".encode()
    signature = b64(hmac.new(key, signing, hashlib.sha256).digest()) if alg == "HS256" else ""
    return f"{head}.{body}.{signature}"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.server.shutdown()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def infer(srv: Server, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [ROW]}]}
    return srv.request("POST", "/v2/models/fraud-api/infer", body, headers)


def challenge(srv: Server, headers: dict[str, str] | None = None) -> str:
    conn = srv.conn()
    try:
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [ROW]}]})
        conn.request("POST", "/v2/models/fraud-api/infer", body=body, headers=headers or {})
        reply = conn.getresponse()
        reply.read()
        return str(reply.getheader("WWW-Authenticate", ""))
    finally:
        conn.close()


def oidc_server(serve: Callable[..., Server], tmp_path: Path, idp: IdentityProvider, **auth: Any) -> Server:
    settings = {"method": "oidc", "issuer": idp.issuer, "audiences": [AUDIENCE], "leeway": 30, **auth}
    return serve([variant(tmp_path, "stable", "3", STABLE_W)], auth=settings)


# --- API keys ------------------------------------------------------------------------------------------


def test_api_keys_are_required_and_compared_and_never_logged(serve: Callable[..., Server], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# one key per line\nfirst-key-0123456789\nsecond-key-9876543210\n")
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], auth={"method": "api_key", "api_key_file": str(keys)})

    status, err = infer(srv)
    assert status == 401 and "X-API-Key" in err["error"]
    assert challenge(srv).startswith("ApiKey realm=")
    status, err = infer(srv, {"X-API-Key": "first-key-012345678"})  # one character short
    assert status == 401 and "not valid" in err["error"]
    for headers in ({"X-API-Key": "first-key-0123456789"}, bearer("second-key-9876543210")):
        status, out = infer(srv, headers)
        assert status == 200 and out["outputs"][0]["data"] == pytest.approx([score(STABLE_W, ROW)])
    # metadata needs the key too; health and metrics are open by default (probes and scrapes)
    assert srv.request("GET", "/v2/models/fraud-api")[0] == 401
    assert srv.request("GET", "/v2/models/fraud-api", headers={"X-API-Key": "first-key-0123456789"})[0] == 200
    assert srv.request("GET", "/v2/health/ready")[0] == 200
    # a miss tells a caller without a key nothing about what is served
    status, err = srv.request("GET", "/v2/models/guess")
    assert status == 401 and "fraud-api" not in json.dumps(err)
    key = {"X-API-Key": "first-key-0123456789"}
    assert srv.request("GET", "/v2/models/guess", headers=key)[0] == 404
    assert srv.metric("mlspec_auth_requests_total", outcome="ok") == 4
    assert srv.metric("mlspec_auth_requests_total", outcome="missing") == 4
    assert srv.metric("mlspec_auth_requests_total", outcome="invalid") == 1
    assert srv.metric("mlspec_http_responses_total", code="401") == 5
    assert "key-0123456789" not in srv.log.read_text() and "key-9876543210" not in srv.log.read_text()


def test_health_and_metrics_can_be_closed_too(serve: Callable[..., Server], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("k-0123456789abcdef\n")
    auth = {"method": "api_key", "api_key_file": str(keys), "open_routes": ["health"]}
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], auth=auth)
    assert srv.request("GET", "/metrics")[0] == 401
    assert srv.request("GET", "/metrics", headers={"X-API-Key": "k-0123456789abcdef"})[0] == 200
    assert srv.request("GET", "/v2/health/live")[0] == 200


def test_a_server_without_any_api_key_refuses_to_start(tmp_path: Path) -> None:
    from mlspec.serving import process

    keys = tmp_path / "keys"
    keys.write_text("\n# nothing\n")
    config = {
        "deployment": "fraud-api",
        "model_name": "fraud-detector",
        "port": 0,
        "features": ["a", "b", "c"],
        "variants": [variant(tmp_path, "stable", "3", STABLE_W)],
        "auth": {"method": "api_key", "api_key_file": str(keys)},
    }
    path = tmp_path / "serving.json"
    path.write_text(json.dumps(config))
    with pytest.raises(Exception, match="no API keys"):
        process.start(path, tmp_path / "server.log", timeout=30)


def test_auth_settings_are_checked() -> None:
    with pytest.raises(AuthConfigError, match="method"):
        AuthConfig.from_dict({"method": "basic"})
    with pytest.raises(AuthConfigError, match="exactly one"):
        AuthConfig.from_dict({"method": "api_key"})
    with pytest.raises(AuthConfigError, match="issuer"):
        AuthConfig.from_dict({"method": "oidc"})
    with pytest.raises(AuthConfigError, match="https"):
        AuthConfig.from_dict({"method": "oidc", "issuer": "http://idp.example.com"})
    with pytest.raises(AuthConfigError, match="open_routes"):
        AuthConfig.from_dict({"method": "api_key", "api_key_env": "K", "open_routes": ["infer"]})
    settings = {"method": "oidc", "issuer": "https://idp.example.com", "audiences": ["a"]}
    assert AuthConfig.from_dict(AuthConfig.from_dict(settings).to_dict()) == AuthConfig.from_dict(settings)


# --- OIDC ----------------------------------------------------------------------------------------------


def test_a_valid_token_for_this_audience_is_served_rsa_and_ec(
    serve: Callable[..., Server], tmp_path: Path, idp: IdentityProvider
) -> None:
    srv = oidc_server(serve, tmp_path, idp)
    for token in (idp.token(), idp.token(kid="ec-1", key=idp.ec, alg="ES256"), idp.token(aud=["other", AUDIENCE])):
        status, out = infer(srv, bearer(token))
        assert status == 200, out
        assert out["outputs"][0]["data"] == pytest.approx([score(STABLE_W, ROW)])
    assert idp.fetches >= 1  # keys found through the issuer's discovery document


def test_every_bad_token_is_refused_with_401_or_403(
    serve: Callable[..., Server], tmp_path: Path, idp: IdentityProvider
) -> None:
    srv = oidc_server(serve, tmp_path, idp)
    now = int(time.time())
    public_pem = idp.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "no token": (None, 401, "needs a bearer token"),
        "not a JWT": ("not-a-token", 401, "not a JWT"),
        "alg none": (unsigned_token(idp.issuer, "none"), 401, "algorithm is not accepted"),
        "HMAC keyed with the public key": (unsigned_token(idp.issuer, "HS256", public_pem), 401, "not accepted"),
        "signed by another key": (idp.token(key=stranger), 401, "not valid"),
        "expired beyond the leeway": (idp.token(exp=now - 120), 401, "expired"),
        "not valid yet": (idp.token(nbf=now + 600), 401, "not valid yet"),
        "another issuer": (idp.token(iss="https://evil.example.com"), 401, "another issuer"),
        "no expiry": (idp.token(exp=None), 401, "exp"),
        "another audience": (idp.token(aud="core-banking"), 403, "audience"),
        "no audience": (idp.token(aud=None), 403, "audience"),
        "EC key used as RSA": (idp.token(kid="ec-1"), 401, "does not fit"),
        "oversized": ("x" * 20_000, 401, "longer than"),
    }
    for case, (token, status, words) in refused.items():
        got, err = infer(srv, bearer(token) if token else None)
        assert (got, words in err["error"]) == (status, True), (case, got, err)
    assert challenge(srv).startswith('Bearer realm="fraud-api"')
    assert 'error="invalid_token"' in challenge(srv, bearer(idp.token(exp=now - 120)))
    assert 'error="insufficient_scope"' in challenge(srv, bearer(idp.token(aud="core-banking")))
    # expired only a few seconds ago: inside the clock-skew leeway
    assert infer(srv, bearer(idp.token(exp=now - 5)))[0] == 200
    assert srv.metric("mlspec_auth_requests_total", outcome="forbidden") == 3
    assert srv.metric("mlspec_auth_requests_total", outcome="expired") == 2
    log = srv.log.read_text()
    assert "eyJ" not in log  # no token (nor any JWT-looking text) in the server log


def test_a_rotated_signing_key_is_fetched_when_a_token_names_it(
    serve: Callable[..., Server], tmp_path: Path, idp: IdentityProvider
) -> None:
    srv = oidc_server(serve, tmp_path, idp, jwks_min_interval=0.2, jwks_uri=idp.issuer + "/keys")
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = idp.token(kid="rsa-2", key=rotated)
    status, err = infer(srv, bearer(token))
    assert status == 401 and "not known" in err["error"]
    idp.published.append(("rsa-2", rotated, "RS256"))  # the issuer publishes its new key
    deadline = time.monotonic() + 10
    while (status := infer(srv, bearer(token))[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200
    assert srv.metric("mlspec_auth_requests_total", outcome="unknown_key") >= 1


def test_an_unreachable_issuer_fails_closed(tmp_path: Path, idp: IdentityProvider) -> None:
    from mlspec.serving import process
    from mlspec.serving.auth import Authenticator

    settings = {"method": "oidc", "issuer": idp.issuer, "jwks_uri": "http://127.0.0.1:9/keys", "audiences": [AUDIENCE]}
    config = {
        "deployment": "fraud-api",
        "model_name": "fraud-detector",
        "port": 0,
        "features": ["a", "b", "c"],
        "variants": [variant(tmp_path, "stable", "3", STABLE_W)],
        "auth": {**settings, "jwks_min_interval": 0.2},
    }
    path = tmp_path / "serving.json"
    path.write_text(json.dumps(config))
    # never ready (so never routed to) while it cannot check anyone
    with pytest.raises(process.ServingStartError, match="not ready") as failed:
        process.start(path, tmp_path / "server.log", timeout=3)
    assert "cannot fetch the issuer's signing keys" in str(failed.value)
    authenticator = Authenticator(AuthConfig.from_dict(settings), "fraud-api")
    denied = authenticator.check("infer", f"Bearer {idp.token()}", None)
    assert denied is not None and denied.status == 401 and "signing keys" in denied.message


def test_tritonclient_with_a_bearer_header(serve: Callable[..., Server], tmp_path: Path, idp: IdentityProvider) -> None:
    import numpy as np

    httpclient = pytest.importorskip("tritonclient.http")
    srv = oidc_server(serve, tmp_path, idp)
    client = httpclient.InferenceServerClient(srv.url.removeprefix("http://"))
    tensor = httpclient.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32), binary_data=False)
    result = client.infer("fraud-api", [tensor], headers=bearer(idp.token()))
    assert result.as_numpy("score").ravel().tolist() == pytest.approx([score(STABLE_W, ROW)])
    with pytest.raises(Exception, match="bearer token"):
        client.infer("fraud-api", [tensor])
