"""Credentials of the local model servers: what each server checks, and what a caller sends.

* ``auth.method: api_key``: the keys of ``auth.api_keys`` (a secret reference, read by the server from
  ``MLSPEC_SECRET_<REF>``), or, when the spec names none, one key mlspec creates in
  ``<data_dir>/auth/<deployment>.api-key`` (0600).
* ``auth.method: oidc``: tokens of the Environment's ``identity`` issuer, or, when it names none, of the
  environment's own local issuer: an EC P-256 key in ``<data_dir>/auth/issuer-key.pem`` (0600) whose public
  half is the JWKS the servers read (``jwks.json``); :func:`mint_token` signs tokens with it (``mlspec token``).
* ``auth.required: false``: no check. ``mtls`` is refused on local environments at render.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.runtime.context import reference_variable
from mlspec.spec.deployment import Auth
from mlspec.targets.base import TargetError
from mlspec.targets.local.paths import LocalPaths

ISSUER_KEY = "issuer-key.pem"
JWKS = "jwks.json"
KEY_ID = "mlspec-local-1"


def local_issuer(paths: LocalPaths) -> str:
    """The ``iss`` of the environment's local issuer."""
    return f"mlspec-local:{paths.environment}"


def auth_folder(paths: LocalPaths) -> Path:
    """Where the environment's local credentials live (keys 0600)."""
    return paths.data_dir / "auth"


def api_key_path(paths: LocalPaths, deployment: str) -> Path:
    """The key file mlspec creates for an api_key Deployment that names no secret."""
    return auth_folder(paths) / f"{deployment}.api-key"


def server_auth(paths: LocalPaths, deployment: str, auth: Auth) -> dict[str, Any] | None:
    """The serving configuration's ``auth`` for a Deployment (None when callers are not checked); creates the
    local key or issuer the first time one is needed."""
    if not auth.required or auth.method == "none":
        return None
    common = {"method": auth.method, "open_routes": list(auth.open_routes)}
    if auth.method == "api_key":
        if auth.api_keys is not None:
            return {**common, "api_key_env": reference_variable(auth.api_keys)}
        path = api_key_path(paths, deployment)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(path, (secrets.token_urlsafe(32) + "\n").encode(), mode=0o600)
        return {**common, "api_key_file": str(path)}
    if auth.method == "oidc":
        if paths.issuer is not None:
            issuer = {"issuer": paths.issuer, **({"jwks_uri": paths.jwks_uri} if paths.jwks_uri else {})}
        else:
            issuer = {"issuer": local_issuer(paths), "jwks_uri": _local_jwks(paths).as_uri()}
        return {**common, **issuer, "audiences": list(auth.audiences)}
    raise TargetError(f"{deployment}: auth.method {auth.method} is not served by the local model server")


def _local_jwks(paths: LocalPaths) -> Path:
    """The local issuer's JWKS, made (with its signing key) the first time."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = auth_folder(paths)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, jwks_path = folder / ISSUER_KEY, folder / JWKS
    if key_path.exists() and jwks_path.exists():
        return jwks_path
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(key_path, pem, mode=0o600)
    atomic_write(jwks_path, json.dumps({"keys": [_public_jwk(key)]}, indent=2).encode())
    return jwks_path


def _public_jwk(key: Any) -> dict[str, Any]:
    import jwt

    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": KEY_ID, "alg": "ES256", "use": "sig"}


def mint_token(paths: LocalPaths, audience: str | None, subject: str, ttl_seconds: int) -> str:
    """A token of the environment's local issuer for ``audience`` (ES256, expiring in ``ttl_seconds``)."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    if paths.issuer is not None:
        raise TargetError(
            f"environment '{paths.environment}' trusts the issuer {paths.issuer}: get tokens from it, not from mlspec"
        )
    _local_jwks(paths)
    key = serialization.load_pem_private_key((auth_folder(paths) / ISSUER_KEY).read_bytes(), password=None)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": local_issuer(paths), "sub": subject, "iat": now, "nbf": now}
    claims["exp"] = now + ttl_seconds
    if audience:
        claims["aud"] = audience
    return str(jwt.encode(claims, key, algorithm="ES256", headers={"kid": KEY_ID}))  # type: ignore[arg-type]


def caller_headers(
    paths: LocalPaths, deployment: str, auth: Auth, subject: str = "mlspec", ttl_seconds: int = 300
) -> dict[str, str]:
    """The headers a caller on this machine sends to a Deployment's local server (empty when none are needed).

    API keys from a secret reference are read from its variable; tokens come from the local issuer."""
    import os

    if not auth.required or auth.method == "none":
        return {}
    if auth.method == "api_key":
        if auth.api_keys is not None:
            value = os.environ.get(reference_variable(auth.api_keys), "").strip().splitlines()
            if not value:
                raise TargetError(f"{deployment}: set {reference_variable(auth.api_keys)} to call it")
            return {"X-API-Key": value[0].strip()}
        return {"X-API-Key": api_key_path(paths, deployment).read_text().strip()}
    audience = auth.audiences[0] if auth.audiences else None
    return {"Authorization": f"Bearer {mint_token(paths, audience, subject, ttl_seconds)}"}


def server_credentials(paths: LocalPaths, auth: dict[str, Any] | None) -> dict[str, str]:
    """Headers mlspec itself sends to a local server whose configuration's ``auth`` is ``auth`` (to read its
    metadata and rollout): the key it checks, or a short token of the local issuer; empty when mlspec cannot
    make one (an outside issuer's tokens) or none is needed."""
    import os

    if not auth:
        return {}
    if auth.get("api_key_file"):
        return {"X-API-Key": Path(auth["api_key_file"]).read_text().split()[0]}
    if auth.get("api_key_env"):
        keys = os.environ.get(auth["api_key_env"], "").split()
        return {"X-API-Key": keys[0]} if keys else {}
    if auth.get("issuer") == local_issuer(paths):
        audiences = auth.get("audiences") or [None]
        return {"Authorization": f"Bearer {mint_token(paths, audiences[0], 'mlspec', 120)}"}
    return {}
