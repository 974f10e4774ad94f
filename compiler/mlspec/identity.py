"""Who acts, and how mlspec knows it.

An identity is **asserted** (``--as``, ``MLSPEC_ACTOR``, the git user's email, the login: anyone can type any of
them) or **proven**:

* ``ci-oidc``: an OpenID Connect ID token of the environment's CI (``access.ci``; GitHub Actions by default),
  verified against the issuer's published keys (asymmetric signatures only), its issuer, audience, expiry and
  not-before (60 s of clock skew), and the claims that say which job it is: ``repository``, ``ref`` and, when
  set, ``environment``. mlspec reads it from ``MLSPEC_OIDC_TOKEN`` or requests it from GitHub Actions
  (``ACTIONS_ID_TOKEN_REQUEST_URL``/``_TOKEN``, present in a job with ``permissions: id-token: write``). The
  job then acts as ``access.ci.principal``.
* ``oidc-login``: the person logged in with ``mlspec login`` (device code, RFC 8628) at the organisation's
  identity provider (``access.login``); their ID token is kept per user (0600) and verified on every use (keys,
  issuer, audience = the client id, expiry); its ``email`` (or the configured claim) names them.
* ``signed-commit``: ``HEAD`` carries a valid OpenPGP signature by a key of ``access.signers``, whose mapping
  names the person.

A token that is presented but does not verify is an error, never quietly an assertion. Outside the local tier a
restricted operation needs a proven identity (:mod:`mlspec.access`); the evidence (the token's claims, never the
token; the commit and key) goes into the audit log.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.errors import MlspecError

if TYPE_CHECKING:
    from mlspec.spec.access import Access, CiIdentity, PeopleLogin

TOKEN_VARIABLE = "MLSPEC_OIDC_TOKEN"
LEEWAY = 60.0
_CLAIMS = ("sub", "repository", "ref", "environment", "workflow_ref", "run_id", "run_attempt", "sha", "actor", "jti")
# one verification per token and commit in a process, each remembered until its token expires
_PROVEN: dict[tuple[Any, ...], tuple[Identity, float]] = {}


@dataclass(frozen=True)
class Identity:
    """Who acts (``name``, as access rules name people), how it is known, and the evidence (no secrets)."""

    name: str
    method: str  # asserted, ci-oidc or signed-commit
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def proven(self) -> bool:
        """Known from something verified, not typed in."""
        return self.method != "asserted"

    def record(self) -> dict[str, Any]:
        """How the audit log records it."""
        return {"name": self.name, "method": self.method, "evidence": dict(self.evidence)}


class IdentityError(MlspecError):
    """A proof of identity was presented and does not verify."""


class TokenExpired(IdentityError):
    """A token that verified once and has expired since."""


def ci_token(audience: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The CI's ID token: ``MLSPEC_OIDC_TOKEN``, else one requested from GitHub Actions for ``audience``."""
    env = os.environ if environ is None else environ
    if env.get(TOKEN_VARIABLE):
        return env[TOKEN_VARIABLE].strip()
    url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        return None
    separator = "&" if urllib.parse.urlsplit(url).query else "?"
    request = urllib.request.Request(
        f"{url}{separator}audience={urllib.parse.quote(audience)}", headers={"Authorization": f"bearer {bearer}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            value = json.loads(reply.read(64 * 1024)).get("value")
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot get the job's OIDC token from GitHub Actions: {exc}") from None
    if not isinstance(value, str) or not value:
        raise IdentityError("GitHub Actions answered without an OIDC token")
    return value


def verify_jwt(token: str, issuer: str, jwks_uri: str | None, audience: str, what: str) -> dict[str, Any]:
    """The claims of ``token`` once its signature (the issuer's published keys, asymmetric algorithms only), issuer,
    audience, expiry and not-before are verified; IdentityError naming ``what`` token and what does not hold."""
    try:
        import jwt
    except ImportError:
        raise IdentityError(f"verifying {what} needs PyJWT (pip install 'mlspec[serve]')") from None
    from mlspec.serving.auth import ALGORITHM_KEYS, discovery_uri, read_document, signing_keys

    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise IdentityError(f"the {what} is not a JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHM_KEYS:
        raise IdentityError(f"the {what}'s algorithm {alg!r} is not accepted (asymmetric signatures only)")
    try:
        uri = jwks_uri or str(read_document(discovery_uri(issuer))["jwks_uri"])
        keys = signing_keys(read_document(uri))
    except Exception as exc:  # unreachable issuer, bad document: fail closed
        raise IdentityError(f"cannot read the signing keys of {issuer}: {exc}") from None
    kid = header.get("kid")
    key = keys.get(str(kid)) if kid is not None else (next(iter(keys.values())) if len(keys) == 1 else None)
    if key is None or key.kty != ALGORITHM_KEYS[alg]:
        raise IdentityError(f"the {what} is signed by a key {issuer} does not publish")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=[alg], issuer=issuer, audience=audience, leeway=LEEWAY,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise TokenExpired(f"the {what} has expired") from None
    except jwt.PyJWTError as exc:
        raise IdentityError(f"the {what} does not verify: {exc}") from None
    return claims


def verify_ci_token(token: str, ci: CiIdentity) -> dict[str, Any]:
    """The claims of ``token`` once it is verified as ``ci``'s; IdentityError saying what does not hold."""
    try:
        claims = verify_jwt(token, ci.issuer, ci.jwks_uri, ci.audience, "CI token")
    except TokenExpired as exc:
        raise IdentityError(f"{exc}: Signature has expired") from None
    expected = {"repository": ci.repository, "ref": ci.ref}
    if ci.environment:
        expected["environment"] = ci.environment
    for claim, value in expected.items():
        if claims.get(claim) != value:
            raise IdentityError(f"the CI token is for {claim} {claims.get(claim)!r}, not {value!r} (access.ci.{claim})")
    return claims


def login_file(login: PeopleLogin, environ: Mapping[str, str] | None = None) -> Path:
    """Where ``mlspec login`` keeps a person's ID token for this identity provider (0600, per user)."""
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(f"{login.issuer}\0{login.client_id}".encode()).hexdigest()[:16]
    return base / "mlspec" / "login" / f"{key}.json"


def _recall(key: tuple[Any, ...]) -> Identity | None:
    """The identity proven for ``key`` earlier in this process, while its proof holds."""
    found = _PROVEN.get(key)
    if found is None or found[1] <= time.time():
        _PROVEN.pop(key, None)
        return None
    return found[0]


def _remember(key: tuple[Any, ...], identity: Identity, until: float = math.inf) -> Identity:
    _PROVEN[key] = (identity, until)
    return identity


def person(login: PeopleLogin, environ: Mapping[str, str] | None = None) -> Identity | None:
    """The person logged in to ``login`` (``mlspec login``), verified now; None when nobody is, or the login
    expired (log in again); IdentityError when the kept token does not verify."""
    try:
        saved = json.loads(login_file(login, environ).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = saved.get("id_token") if isinstance(saved, dict) else None
    if not isinstance(token, str):
        return None
    key = ("login", token, login.model_dump_json())
    known = _recall(key)
    if known is not None:
        return known
    try:
        claims = verify_jwt(token, login.issuer, None, login.client_id, "login token")
    except TokenExpired:
        return None
    name = claims.get(login.claim)
    if not isinstance(name, str) or not name:
        raise IdentityError(f"the login token has no {login.claim!r} claim to name the person by (access.login.claim)")
    evidence: dict[str, str] = {"issuer": login.issuer}
    evidence.update((c, str(claims[c])) for c in ("sub", "jti", "iat", "exp") if c in claims)
    return _remember(key, Identity(name, "oidc-login", evidence), float(claims["exp"]))


def establish(
    repo: Path | None, access: Access | None, asserted: str, environ: Mapping[str, str] | None = None
) -> Identity:
    """Who acts: the CI job proven by its token, else the person logged in (``mlspec login``), else the signer of
    HEAD, else ``asserted`` (unproven)."""
    env = os.environ if environ is None else environ
    if access is not None and access.ci is not None:
        token = ci_token(access.ci.audience, env)
        if token:
            key: tuple[Any, ...] = ("ci", token, access.ci.model_dump_json())
            known = _recall(key)
            if known is not None:
                return known
            claims = verify_ci_token(token, access.ci)
            evidence = {c: str(claims[c]) for c in _CLAIMS if c in claims}
            proven = Identity(access.ci.principal, "ci-oidc", {"issuer": access.ci.issuer, **evidence})
            return _remember(key, proven, float(claims["exp"]))
    if access is not None and access.login is not None:
        found = person(access.login, env)
        if found is not None:
            return found
    if access is not None and access.signers and repo is not None:
        from mlspec.git.runner import Git
        from mlspec.git.signatures import verify_commit

        head = Git(repo).run("rev-parse", "HEAD")
        if head.ok:
            commit = head.stdout.strip()
            key = ("commit", commit, tuple(sorted(access.signers.items())))
            known = _recall(key)
            if known is not None:
                return known
            check = verify_commit(repo, commit, list(access.signers))
            name = access.signers.get(check.fingerprint.upper(), "") if check.ok else ""
            if name:  # signers name primary keys, as gpg reports the signer
                evidence = {"commit": commit, "key": check.fingerprint, "signer": check.signer}
                return _remember(key, Identity(name, "signed-commit", evidence))
    return Identity(asserted, "asserted")
