"""The cache of verified bearer tokens (serving/auth.py): it saves the signature check on a repeated token and never
accepts a token that the full check would refuse: expired tokens, tokens of a removed or replaced key, refused ones.

The test is its own issuer: RSA keys, a JWKS file read over file://, tokens minted with PyJWT; the authenticator is
driven directly (no server, no refresh thread: the key set is fetched by hand).
"""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

jwt = pytest.importorskip("jwt")

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from mlspec.serving import auth  # noqa: E402
from mlspec.serving.auth import AuthConfig, Authenticator, Verified, VerifiedTokens  # noqa: E402

ISSUER = "https://idp.example.com"
AUDIENCE = "fraud-api"


class Issuer:
    """Signing keys by key id, published as a JWKS file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, Any] = {}

    def add(self, kid: str) -> Any:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.publish()
        return self.keys[kid]

    def remove(self, kid: str) -> None:
        del self.keys[kid]
        self.publish()

    def publish(self) -> None:
        entries = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            entries.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        self.path.write_text(json.dumps({"keys": entries}))

    def token(self, kid: str = "k1", key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return str(jwt.encode(payload, key or self.keys[kid], algorithm="RS256", headers={"kid": kid}))


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    found = Issuer(tmp_path / "jwks.json")
    found.add("k1")
    found.add("k2")
    return found


def authenticator(issuer: Issuer, leeway: int = 30) -> Authenticator:
    settings = {
        "method": "oidc",
        "issuer": ISSUER,
        "jwks_uri": issuer.path.as_uri(),
        "audiences": [AUDIENCE],
        "leeway": leeway,
    }
    checker = Authenticator(AuthConfig.from_dict(settings), "fraud-api")
    assert checker.keyset is not None
    checker.keyset.fetch()
    assert checker.ready
    return checker


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every token that goes through PyJWT's full decode (signature and claims)."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    yield seen


def check(checker: Authenticator, token: str) -> auth.Denied | None:
    return checker.check("infer", f"Bearer {token}", None)


def test_a_verified_token_is_not_verified_again(issuer: Issuer, decodes: list[str]) -> None:
    checker = authenticator(issuer)
    token = issuer.token()
    for _ in range(5):
        assert check(checker, token) is None
    assert decodes == [token]
    assert checker.outcomes["ok"] == 5
    assert list(checker.verified.tokens) == [token]


def test_an_expired_token_is_refused_even_when_it_was_cached(issuer: Issuer, decodes: list[str]) -> None:
    checker = authenticator(issuer, leeway=0)
    exp = int(time.time()) + 1
    token = issuer.token(exp=exp)
    assert check(checker, token) is None
    assert check(checker, token) is None
    assert len(decodes) == 1
    while time.time() < exp + 0.05:
        time.sleep(0.05)
    denied = check(checker, token)
    assert denied is not None and denied.status == 401 and "expired" in denied.message
    assert checker.outcomes["expired"] == 1
    assert token not in checker.verified.tokens
    assert len(decodes) == 2  # the full check said why


def test_the_time_window_is_checked_on_every_hit(issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> None:
    """exp, nbf and iat compared as PyJWT compares them, with the same leeway, against the clock of each request."""
    checker = authenticator(issuer, leeway=30)
    now = int(time.time())
    token = issuer.token(exp=now + 100, nbf=now - 10, iat=now - 10)
    assert check(checker, token) is None
    assert checker.keyset is not None
    keys = checker.keyset.keys

    def at(moment: float) -> bool:
        monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: moment, monotonic=time.monotonic))
        return checker.verified.accepts(token, keys, 30)

    assert at(now + 129.5)  # inside exp + leeway
    assert not at(now + 130)  # exp <= now - leeway: expired, and dropped
    assert token not in checker.verified.tokens
    entry = Verified.of({"exp": now + 100, "nbf": now + 50, "iat": now})
    assert entry.current(30) is False  # (clock is still now + 130 here: expired)
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: now + 19.0, monotonic=time.monotonic))
    assert entry.current(30) is False  # nbf > now + leeway: not valid yet
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: now + 20.0, monotonic=time.monotonic))
    assert entry.current(30) is True
    assert Verified.of({"exp": now + 100, "iat": now + 51}).current(30) is False  # iat in the future
    assert Verified.of({"exp": now + 100}).current(30) is True  # neither nbf nor iat


def test_a_token_of_a_removed_key_is_refused_after_the_key_set_changes(issuer: Issuer, decodes: list[str]) -> None:
    checker = authenticator(issuer)
    assert checker.keyset is not None
    old, kept = issuer.token(kid="k2"), issuer.token(kid="k1")
    assert check(checker, old) is None and check(checker, kept) is None
    assert check(checker, old) is None and len(decodes) == 2  # both cached
    issuer.remove("k2")
    checker.keyset.fetch()
    denied = check(checker, old)
    assert denied is not None and denied.status == 401 and "not known" in denied.message
    assert checker.outcomes["unknown_key"] == 1
    assert check(checker, kept) is None
    assert decodes[-1] == kept  # verified again against the new key set, not taken from the cache
    assert list(checker.verified.tokens) == [kept]


def test_a_key_replaced_under_the_same_key_id_refuses_the_old_tokens(issuer: Issuer) -> None:
    checker = authenticator(issuer)
    assert checker.keyset is not None
    token = issuer.token(kid="k2")
    assert check(checker, token) is None
    issuer.add("k2")  # a new key under the old id
    checker.keyset.fetch()
    denied = check(checker, token)
    assert denied is not None and denied.status == 401 and "not valid" in denied.message
    assert check(checker, issuer.token(kid="k2")) is None


def test_refused_tokens_are_never_remembered(issuer: Issuer, decodes: list[str]) -> None:
    checker = authenticator(issuer)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    refused = {
        issuer.token(aud="core-banking"): 403,
        issuer.token(key=stranger): 401,
        issuer.token(iss="https://evil.example.com"): 401,
        issuer.token(nbf=now + 600): 401,
        issuer.token(exp=now - 120): 401,
    }
    for _ in range(2):
        for token, status in refused.items():
            denied = check(checker, token)
            assert denied is not None and denied.status == status
    assert not checker.verified.tokens
    assert len(decodes) == 2 * len(refused)


def test_the_cache_is_bounded_least_recently_used_first(issuer: Issuer, decodes: list[str]) -> None:
    checker = authenticator(issuer)
    checker.verified = VerifiedTokens(capacity=2)
    first, second, third = (issuer.token(sub=f"svc-{i}") for i in range(3))
    for token in (first, second, first, third):  # `second` is the least recently used when `third` comes
        assert check(checker, token) is None
    assert list(checker.verified.tokens) == [first, third]
    assert check(checker, second) is None
    assert decodes == [first, second, third, second]
    assert len(checker.verified.tokens) == 2


def test_a_token_verified_with_a_key_set_replaced_meanwhile_is_not_remembered(issuer: Issuer) -> None:
    checker = authenticator(issuer)
    assert checker.keyset is not None
    before = checker.keyset.keys
    checker.keyset.fetch()  # the refresh thread replaced the key set while the token was being checked
    cache = VerifiedTokens()
    cache.remember("t", Verified(exp=int(time.time()) + 60, not_before=None), before, checker.keyset.keys)
    assert not cache.tokens
    assert not cache.accepts("t", checker.keyset.keys, 30)
