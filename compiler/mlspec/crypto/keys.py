"""Key-encryption keys (KEKs) and the providers that resolve an environment's ``kms_key`` reference to one.

- ``file://PATH``: a local 32-byte key file (relative paths against the project root). ``create=True`` (the
  ``local`` environment only) makes a fresh one with mode 0600 on first use.
- ``kms://aws/KEY``: AWS KMS (:mod:`mlspec.crypto.aws_kms`), built in.
- ``kms://NAME`` (or any other scheme): an external KMS, through a provider registered with
  :func:`register_provider`, or named by ``MLSPEC_KMS_PROVIDER=module:function`` (a factory taking the
  reference). With neither, resolving fails and names the reference: nothing is ever written in plaintext instead.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mlspec.crypto.errors import IntegrityError, KeyProviderError

log = logging.getLogger("mlspec.crypto")

KEY_BYTES = 32
NONCE_BYTES = 12
PROVIDER_VARIABLE = "MLSPEC_KMS_PROVIDER"
ROOT_VARIABLE = "MLSPEC_PROJECT_ROOT"


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. A KMS implements it with its encrypt/decrypt calls; the key never leaves it."""

    @property
    def ref(self) -> str:
        """The reference it was resolved from (``file://...``, ``kms://...``), recorded in each envelope."""
        ...

    @property
    def key_id(self) -> str:
        """A stable, non-secret identifier of the key (checked before unwrapping, for a clear wrong-key error)."""
        ...

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """``(nonce, wrapped)``: ``data_key`` encrypted and authenticated with ``aad``."""
        ...

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; raise IntegrityError when the key, nonce, wrapped bytes or ``aad`` do not match."""
        ...


def fingerprint(key: bytes) -> str:
    """The key id of a raw AES key: a truncated, domain-separated sha256 (reveals nothing about the key)."""
    return hashlib.sha256(b"mlspec-kek-id\x00" + key).hexdigest()[:16]


class LocalKey:
    """A KEK held in memory (from a key file): AES-256-GCM over the data key."""

    def __init__(self, key: bytes, ref: str) -> None:
        if len(key) != KEY_BYTES:
            raise KeyProviderError(f"{ref}: a key must be {KEY_BYTES} bytes, this one has {len(key)}")
        self._key = key
        self._ref = ref
        self._id = fingerprint(key)

    @classmethod
    def generate(cls, ref: str = "memory://generated") -> LocalKey:
        """A fresh random key (tests, and new key files)."""
        return cls(secrets.token_bytes(KEY_BYTES), ref)

    @property
    def ref(self) -> str:
        """The reference it came from."""
        return self._ref

    @property
    def key_id(self) -> str:
        """The key's fingerprint."""
        return self._id

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """AES-GCM with a random 96-bit nonce."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce, AESGCM(self._key).encrypt(nonce, data_key, aad)

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """The data key, or IntegrityError."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(self._key).decrypt(nonce, wrapped, aad)
        except (InvalidTag, ValueError) as exc:
            raise IntegrityError(f"the data key does not unwrap with {self._ref} (header altered?)") from exc

    def __repr__(self) -> str:
        return f"LocalKey(ref={self._ref!r}, key_id={self._id!r})"


ProviderFactory = Callable[[str], KeyEncryptionKey]
_PROVIDERS: dict[str, ProviderFactory] = {}


def register_provider(scheme: str, factory: ProviderFactory) -> None:
    """Resolve references of ``scheme`` (``"kms"``) with ``factory(ref)`` in this process."""
    _PROVIDERS[scheme] = factory


def provider_from_environment(variable: str, error: type[Exception]) -> Callable[[str], Any] | None:
    """The factory a ``module:function`` environment variable names (None when unset); ``error`` when it cannot
    be loaded. Shared by the key providers here and the edge signing providers."""
    spec = os.environ.get(variable, "").strip()
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        factory: Callable[[str], Any] = getattr(importlib.import_module(module), name or "provider")
    except (ImportError, AttributeError) as exc:
        raise error(f"{variable}={spec} cannot be loaded: {exc}") from exc
    return factory


# kms://<provider>/... references mlspec resolves itself (module:function, imported only when used)
BUILT_IN = {"aws": "mlspec.crypto.aws_kms:provider"}


def _built_in(scheme: str, rest: str) -> ProviderFactory | None:
    """The built-in provider a ``kms://<provider>/...`` reference names, if any."""
    target = BUILT_IN.get(rest.split("/", 1)[0]) if scheme == "kms" and "/" in rest else None
    if target is None:
        return None
    module, _, name = target.partition(":")
    factory: ProviderFactory = getattr(importlib.import_module(module), name)
    return factory


def _env_provider() -> ProviderFactory | None:
    return provider_from_environment(PROVIDER_VARIABLE, KeyProviderError)


def key_file_path(ref: str, root: str | Path | None = None) -> Path:
    """The file a ``file://`` reference names (relative paths against ``root``, else $MLSPEC_PROJECT_ROOT or the
    working directory)."""
    path = Path(ref.removeprefix("file://"))
    return path if path.is_absolute() else Path(root or os.environ.get(ROOT_VARIABLE) or Path.cwd()) / path


def create_secret_file(path: Path, data: bytes) -> bool:
    """Write ``data`` to a new file readable by its owner only (0600, in a 0700 folder), durably; False when the file
    already exists (created concurrently: the caller uses that one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _read_key_file(path: Path, ref: str) -> bytes:
    try:
        mode = path.stat().st_mode
        key = path.read_bytes()
    except OSError as exc:
        raise KeyProviderError(f"{ref}: cannot read key file {path}: {exc.strerror or exc}") from exc
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("key file %s is readable by group or others (mode %o); chmod 600 it", path, mode & 0o777)
    return key


def _create_key_file(path: Path) -> None:
    if create_secret_file(path, secrets.token_bytes(KEY_BYTES)):
        log.warning(
            "created a new local key %s: back it up, artifacts encrypted with it cannot be read without it", path
        )


class KeyResolver:
    """Resolves key references to KEKs; ``root`` anchors relative ``file://`` paths (default: $MLSPEC_PROJECT_ROOT,
    else the working directory); ``create`` makes a missing key file (only the ``local`` environment should)."""

    def __init__(self, root: str | Path | None = None, *, create: bool = False) -> None:
        self.root = Path(root or os.environ.get(ROOT_VARIABLE) or Path.cwd())
        self.create = create
        self._cache: dict[str, KeyEncryptionKey] = {}

    def key_path(self, ref: str) -> Path:
        """The file a ``file://`` reference names."""
        return key_file_path(ref, self.root)

    def resolve(self, ref: str) -> KeyEncryptionKey:
        """The KEK for ``ref``; raise KeyProviderError naming the reference when it cannot be had."""
        if ref in self._cache:
            return self._cache[ref]
        scheme, sep, rest = ref.partition("://")
        if not sep or not rest:
            raise KeyProviderError(f"{ref!r} is not a key reference (file://PATH or kms://NAME)")
        if scheme == "file":
            path = self.key_path(ref)
            if self.create and not path.exists():
                _create_key_file(path)
            found: KeyEncryptionKey = LocalKey(_read_key_file(path, ref), ref)
        else:
            factory = _built_in(scheme, rest) or _PROVIDERS.get(scheme) or _env_provider()
            if factory is None:
                raise KeyProviderError(
                    f"no key provider is configured for {ref}: register one with "
                    f"mlspec.crypto.register_provider({scheme!r}, factory) or set {PROVIDER_VARIABLE}=module:function "
                    "(see docs/encryption.md); refusing to read or write the artifact without it"
                )
            found = factory(ref)
        self._cache[ref] = found
        return found


def resolver(root: str | Path | None = None, *, create: bool = False) -> KeyResolver:
    """A :class:`KeyResolver` (see there)."""
    return KeyResolver(root, create=create)
