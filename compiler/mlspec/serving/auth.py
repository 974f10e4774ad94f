"""Who may call the server: API keys and OIDC bearer tokens, checked before a route answers.

* **API keys** (``method: api_key``): the accepted keys come from a file or an environment variable (a secret
  reference's value), one per line; only their SHA-256 digests are kept in memory. A caller sends one in
  ``X-API-Key`` (or ``Authorization: Bearer <key>``); every digest is compared in constant time.
* **OIDC** (``method: oidc``): a ``Bearer`` JWT is verified against the issuer's JWKS (fetched at start, then
  refreshed in the background every ``jwks_refresh`` seconds and when a token names a key id not yet known, at
  most once per ``jwks_min_interval``): asymmetric algorithms only (``alg: none`` and HMAC are refused, so a
  public key can never be used as an HMAC secret), the key type must fit the algorithm, then signature, issuer,
  expiry and not-before (with ``leeway`` seconds of clock skew), and an audience this endpoint accepts.
  A token that passed is remembered (at most ``VERIFIED_TOKENS``, least recently used dropped first) until the key
  set changes, so the signature is not checked again on every request; its ``exp``, ``nbf`` and ``iat`` still are,
  exactly as the full check compares them, and a token outside that window goes through the full check again.

401 means no or bad credentials (with a ``WWW-Authenticate`` challenge); 403 means a valid token that is not
for this endpoint (another audience). Routes named in ``open_routes`` (health probes and metrics scrapes by
default) need no credentials. No message, log line or metric ever holds a credential.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mlspec.serving")

ROUTE_KINDS = ("infer", "metadata", "health", "metrics")
METHODS = ("api_key", "oidc")
# the only algorithms a token may name, by the key type that verifies each
ALGORITHM_KEYS = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES384", "ES512"), "EC"),
    "EdDSA": "OKP",
}
MAX_TOKEN = 16 * 1024
VERIFIED_TOKENS = 1024  # verified tokens remembered per authenticator (at most 16 MiB of MAX_TOKEN-long ones)
OUTCOMES = ("ok", "open", "missing", "invalid", "expired", "unknown_key", "forbidden")


class AuthConfigError(ValueError):
    """The auth section of the serving configuration is wrong, or its keys cannot be had."""


@dataclass(frozen=True, slots=True)
class Denied:
    """A refused request: 401 (no or bad credentials, with a ``WWW-Authenticate`` challenge) or 403 (valid
    credentials that may not call this endpoint). ``message`` says what is wrong and never echoes a credential."""

    status: int
    message: str
    challenge: str = ""


@dataclass(frozen=True)
class AuthConfig:
    """How the server authenticates callers (the ``auth`` object of the serving configuration)."""

    method: str
    open_routes: tuple[str, ...] = ("health", "metrics")
    api_key_file: str | None = None  # one key per line
    api_key_env: str | None = None  # an environment variable holding the keys, one per line
    issuer: str | None = None
    jwks_uri: str | None = None  # https://, file://, or http:// on loopback; default: the issuer's discovery
    audiences: tuple[str, ...] = ()
    leeway: int = 30
    jwks_refresh: int = 300
    jwks_min_interval: float = 10.0

    @classmethod
    def from_dict(cls, raw: Any) -> AuthConfig:
        """The auth settings in ``raw``; AuthConfigError saying what is wrong."""
        if not isinstance(raw, dict):
            raise AuthConfigError("'auth' must be an object")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise AuthConfigError(f"'auth' has unknown field(s): {', '.join(unknown)}")
        method = raw.get("method")
        if method not in METHODS:
            raise AuthConfigError(f"'auth.method' must be one of {', '.join(METHODS)}, not {method!r}")
        open_routes = tuple(raw.get("open_routes", ("health", "metrics")))
        bad = [r for r in open_routes if r not in ROUTE_KINDS or r == "infer"]
        if bad:
            raise AuthConfigError(f"'auth.open_routes' may name health, metrics and metadata, not {bad}")
        config = cls(
            method=method,
            open_routes=open_routes,
            api_key_file=raw.get("api_key_file"),
            api_key_env=raw.get("api_key_env"),
            issuer=raw.get("issuer"),
            jwks_uri=raw.get("jwks_uri"),
            audiences=tuple(raw.get("audiences", ())),
            leeway=int(_number(raw, "leeway", 30, 0, 600)),
            jwks_refresh=int(_number(raw, "jwks_refresh", 300, 1, 86400)),
            jwks_min_interval=_number(raw, "jwks_min_interval", 10, 0, 3600),
        )
        if method == "api_key" and (config.api_key_file is None) == (config.api_key_env is None):
            raise AuthConfigError("'auth' with method api_key needs exactly one of api_key_file and api_key_env")
        if method == "oidc":
            if not isinstance(config.issuer, str) or not config.issuer:
                raise AuthConfigError("'auth' with method oidc needs the token 'issuer'")
            _check_uri(config.jwks_uri or discovery_uri(config.issuer))
        return config

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (the inverse of from_dict)."""
        data: dict[str, Any] = {"method": self.method, "open_routes": list(self.open_routes)}
        for name in ("api_key_file", "api_key_env", "issuer", "jwks_uri"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.method == "oidc":
            data.update(audiences=list(self.audiences), leeway=self.leeway, jwks_refresh=self.jwks_refresh)
            data["jwks_min_interval"] = self.jwks_min_interval
        return data


def _number(raw: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise AuthConfigError(f"'auth.{key}' must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def discovery_uri(issuer: str) -> str:
    """The issuer's OpenID Connect discovery document (which names its ``jwks_uri``)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _check_uri(uri: str) -> None:
    parts = urllib.parse.urlsplit(uri)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme in {"https", "file"} or (parts.scheme == "http" and loopback):
        return
    raise AuthConfigError(f"keys are fetched over https (or from a file, or http on loopback), not from {uri!r}")


def read_document(uri: str, timeout: float = 5.0) -> Any:
    """The JSON document at ``uri`` (https, file, or http on loopback)."""
    _check_uri(uri)
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file":
        return json.loads(Path(urllib.parse.unquote(parts.path)).read_bytes())
    with urllib.request.urlopen(uri, timeout=timeout) as reply:  # scheme checked above
        return json.loads(reply.read(1024 * 1024))


def load_api_keys(config: AuthConfig) -> tuple[bytes, ...]:
    """The SHA-256 digests of the accepted API keys; AuthConfigError when there are none."""
    if config.api_key_file is not None:
        try:
            text = Path(config.api_key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise AuthConfigError(f"cannot read the API keys in {config.api_key_file}: {exc.strerror}") from exc
        where = config.api_key_file
    else:
        assert config.api_key_env is not None
        text = os.environ.get(config.api_key_env, "")
        where = f"${config.api_key_env}"
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys:
        raise AuthConfigError(f"no API keys in {where}: every request would be refused")
    return tuple(hashlib.sha256(key.encode()).digest() for key in keys)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of the issuer's JWKS: the verifying key, its type, and the algorithm it is limited to (if any)."""

    key: Any
    kty: str
    alg: str | None


def signing_keys(document: Any) -> dict[str, SigningKey]:
    """The signature keys of a JWKS document by key id (keys of other uses or types, or broken ones, skipped)."""
    import jwt

    keys: dict[str, SigningKey] = {}
    entries = document.get("keys", []) if isinstance(document, dict) else []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kty, alg = entry.get("kty"), entry.get("alg")
        if kty not in ALGORITHM_KEYS.values() or (alg is not None and ALGORITHM_KEYS.get(alg) != kty):
            continue
        try:
            key = jwt.PyJWK(entry, alg).key
        except jwt.PyJWTError as exc:
            log.warning("auth: skipping signing key %r: %s", entry.get("kid"), exc)
            continue
        keys[str(entry.get("kid", ""))] = SigningKey(key, str(kty), alg)
    return keys


@dataclass
class KeySet:
    """The issuer's signing keys by key id, refreshed in a background thread."""

    uri: str | None
    issuer: str
    refresh: float
    min_interval: float
    keys: dict[str, SigningKey] = field(default_factory=dict)
    fetched: float = float("-inf")
    problem: str = "signing keys not fetched yet"
    wanted: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)

    def fetch(self) -> None:
        """Fetch the JWKS now (keeping the old keys when it fails)."""
        self.fetched = time.monotonic()
        try:
            uri = self.uri or str(read_document(discovery_uri(self.issuer))["jwks_uri"])
            keys = signing_keys(read_document(uri))
        except Exception as exc:  # a down or wrong key server: keep serving with the keys we have
            self.problem = f"cannot fetch the issuer's signing keys: {exc}"
            log.error("auth: %s", self.problem)
            return
        self.keys, self.problem = keys, "" if keys else "the issuer publishes no signing key"

    def want(self) -> None:
        """Ask the background thread for a refresh (a token named an unknown key id)."""
        self.wanted.set()

    def run(self) -> None:
        """The refresh loop (a daemon thread): every ``refresh`` seconds, or sooner when a refresh is wanted."""
        while not self.stopped.is_set():
            every = self.refresh if self.keys else max(self.min_interval, 1.0)  # no keys yet: retry soon
            self.wanted.wait(timeout=max(0.0, self.fetched + every - time.monotonic()))
            if self.stopped.is_set():
                return
            wait = self.fetched + self.min_interval - time.monotonic()
            if wait > 0 and self.wanted.is_set():
                self.stopped.wait(wait)
            self.wanted.clear()
            self.fetch()


@dataclass(frozen=True, slots=True)
class Verified:
    """What a token that passed the full check is checked against again: its ``exp``, and the later of its ``nbf``
    and ``iat`` (``None`` when it has neither), as PyJWT read them (``int()`` of each)."""

    exp: int
    not_before: int | None

    @classmethod
    def of(cls, claims: dict[str, Any]) -> Verified:
        """The time claims of a decoded token."""
        moments = [int(claims[name]) for name in ("nbf", "iat") if name in claims]
        return cls(int(claims["exp"]), max(moments) if moments else None)

    def current(self, leeway: float) -> bool:
        """Whether the token is inside its validity window now: PyJWT's own comparisons, with the same leeway
        (expired when ``exp <= now - leeway``; not yet valid when ``nbf`` or ``iat`` ``> now + leeway``)."""
        now = time.time()
        if self.exp <= now - leeway:
            return False
        return self.not_before is None or self.not_before <= now + leeway


class VerifiedTokens:
    """Tokens that passed the full check, by their exact text, least recently used first; valid only for the key
    set they were verified with (any change of ``KeySet.keys``, even a refresh with the same keys, empties it)."""

    def __init__(self, capacity: int = VERIFIED_TOKENS) -> None:
        """An empty cache holding at most ``capacity`` tokens."""
        self.capacity = capacity
        self.tokens: OrderedDict[str, Verified] = OrderedDict()
        self.keys: dict[str, SigningKey] | None = None  # the key set every remembered token was verified with
        self.lock = threading.Lock()

    def accepts(self, token: str, keys: dict[str, SigningKey], leeway: float) -> bool:
        """Whether ``token`` passed the full check with ``keys`` (the current key set) and is still inside its time
        window; False sends it through the full check (an entry out of its window is dropped)."""
        with self.lock:
            if keys is not self.keys:
                self.tokens.clear()
                self.keys = keys
                return False
            entry = self.tokens.get(token)
            if entry is None:
                return False
            if not entry.current(leeway):
                del self.tokens[token]
                return False
            self.tokens.move_to_end(token)
            return True

    def remember(
        self, token: str, entry: Verified, keys: dict[str, SigningKey], current: dict[str, SigningKey]
    ) -> None:
        """Remember ``token``, verified with ``keys``, unless the key set has changed since (``current``)."""
        if keys is not current:
            return
        with self.lock:
            if keys is not self.keys:
                self.tokens.clear()
                self.keys = keys
            self.tokens[token] = entry
            self.tokens.move_to_end(token)
            while len(self.tokens) > self.capacity:
                self.tokens.popitem(last=False)


class Authenticator:
    """Checks the credentials of each request against one Deployment's auth settings; counts the outcomes."""

    def __init__(self, config: AuthConfig, realm: str, outcomes: Counter[str] | None = None) -> None:
        """An authenticator for ``config`` counting into ``outcomes``; API keys are read now (AuthConfigError when
        there are none)."""
        self.config = config
        self.realm = realm
        self.outcomes: Counter[str] = outcomes if outcomes is not None else Counter()
        self.digests = load_api_keys(config) if config.method == "api_key" else ()
        self.keyset: KeySet | None = None
        self.thread: threading.Thread | None = None
        self.verified = VerifiedTokens()
        if config.method == "oidc":
            assert config.issuer is not None
            self.keyset = KeySet(config.jwks_uri, config.issuer, config.jwks_refresh, config.jwks_min_interval)

    @property
    def ready(self) -> bool:
        """Whether requests can be checked: always for API keys, once the issuer's keys are in for OIDC."""
        return self.keyset is None or bool(self.keyset.keys)

    def start(self) -> None:
        """Start fetching and refreshing the issuer's keys in the background (OIDC only)."""
        if self.keyset is not None and self.thread is None:
            self.thread = threading.Thread(target=self.keyset.run, name="mlspec-jwks", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Stop the key refresh."""
        if self.keyset is not None:
            self.keyset.stopped.set()
            self.keyset.wanted.set()

    def is_open(self, route: str) -> bool:
        """Whether ``route`` answers without credentials."""
        return route in self.config.open_routes

    def check(self, route: str, authorization: str | None, api_key: str | None) -> Denied | None:
        """None when the caller may use ``route``, else why not; the outcome is counted."""
        if route in self.config.open_routes:
            self.outcomes["open"] += 1
            return None
        if self.config.method == "api_key":
            denied = self._api_key(api_key or _bearer(authorization))
        else:
            denied = self._token(_bearer(authorization))
        return denied

    def _deny(self, outcome: str, status: int, message: str, error: str = "invalid_token") -> Denied:
        self.outcomes[outcome] += 1
        message = _header_safe(message)
        if self.config.method == "api_key":
            challenge = f'ApiKey realm="{self.realm}", header="X-API-Key"'
        elif outcome == "missing":
            challenge = f'Bearer realm="{self.realm}"'
        else:
            challenge = f'Bearer realm="{self.realm}", error="{error}", error_description="{message}"'
        return Denied(status, message, challenge)

    def _api_key(self, presented: str | None) -> Denied | None:
        if not presented:
            return self._deny("missing", 401, "this endpoint needs an API key: send it in the X-API-Key header")
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        match = False
        for known in self.digests:  # every digest, no early exit: the time does not tell which matched
            match |= hmac.compare_digest(known, digest)
        if not match:
            return self._deny("invalid", 401, "the API key is not valid for this endpoint")
        self.outcomes["ok"] += 1
        return None

    def _token(self, token: str | None) -> Denied | None:
        if not token:
            return self._deny("missing", 401, "this endpoint needs a bearer token: send Authorization: Bearer <JWT>")
        if len(token) > MAX_TOKEN:
            return self._deny("invalid", 401, f"the token is longer than {MAX_TOKEN} bytes")
        keyset = self.keyset
        assert keyset is not None
        keys = keyset.keys  # one key set for the whole check (the refresh thread replaces it, never edits it)
        config = self.config
        if self.verified.accepts(token, keys, config.leeway):
            self.outcomes["ok"] += 1
            return None
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return self._deny("invalid", 401, "the bearer token is not a JWT")
        alg = header.get("alg")
        kty = ALGORITHM_KEYS.get(alg) if isinstance(alg, str) else None
        if kty is None or not isinstance(alg, str):
            return self._deny("invalid", 401, "the token's algorithm is not accepted (asymmetric signatures only)")
        key = self._key(keys, header.get("kid"), kty, alg)
        if isinstance(key, Denied):
            return key
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=config.issuer,
                leeway=config.leeway,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            return self._deny("expired", 401, "the token has expired")
        except jwt.ImmatureSignatureError:
            return self._deny("invalid", 401, "the token is not valid yet (nbf or iat in the future)")
        except jwt.InvalidIssuerError:
            return self._deny("invalid", 401, "the token was issued by another issuer")
        except jwt.PyJWTError as exc:
            return self._deny("invalid", 401, f"the token is not valid: {_reason(exc)}")
        if config.audiences:
            aud = claims.get("aud")
            held = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if not held & set(config.audiences):
                message = "the token is not for this endpoint (audience)"
                return self._deny("forbidden", 403, message, "insufficient_scope")
        self.verified.remember(token, Verified.of(claims), keys, keyset.keys)
        self.outcomes["ok"] += 1
        return None

    def _key(self, keys: dict[str, SigningKey], kid: Any, kty: str, alg: str) -> SigningKey | Denied:
        keyset = self.keyset
        assert keyset is not None
        if not keys:
            keyset.want()
            return self._deny("unknown_key", 401, f"no signing keys: {keyset.problem}")
        if kid is None:
            fitting = [k for k in keys.values() if k.kty == kty]
            if len(fitting) != 1:
                return self._deny("invalid", 401, "the token names no key id (kid) and the issuer has several keys")
            key = fitting[0]
        else:
            found = keys.get(str(kid))
            if found is None:
                keyset.want()  # a rotated key: the next refresh brings it
                return self._deny("unknown_key", 401, "the token's signing key is not known (yet); retry shortly")
            key = found
        if key.kty != kty or key.alg not in (None, alg):
            return self._deny("invalid", 401, f"the token's algorithm {alg} does not fit its key")
        return key


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 120 else text[:117] + "..."


def _header_safe(text: str) -> str:
    """``text`` fit for a quoted header parameter: printable ASCII without quotes or backslashes."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
