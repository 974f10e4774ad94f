"""Ed25519 keys that sign edge package manifests, and the public keys and fingerprints devices trust.

- ``file://PATH``: a PEM (PKCS#8) Ed25519 private key file; relative paths against the project root, like the
  environment's ``file://`` keys (:class:`mlspec.crypto.KeyResolver`). ``create=True`` (the ``local`` environment
  only) makes a fresh one, mode 0600 in a 0700 folder, on first use.
- ``kms://NAME`` (or any other scheme): an external signer (a KMS's asymmetric sign call), through a provider
  registered with :func:`register_signer` or named by ``MLSPEC_SIGNING_PROVIDER=module:function``. Without one,
  resolving fails and names the reference: nothing is ever signed with another key instead.

The private key is only ever read from its file (or stays in the KMS): it is never copied, logged or printed.
A public key's fingerprint is ``sha256:`` + the hex sha256 of its 32 raw bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from mlspec.crypto.keys import create_secret_file, key_file_path, provider_from_environment
from mlspec.edge.errors import SigningKeyError

log = logging.getLogger("mlspec.edge")

PROVIDER_VARIABLE = "MLSPEC_SIGNING_PROVIDER"
ALGORITHM = "Ed25519"
RAW_PUBLIC_BYTES = 32
SUFFIX = ".ed25519"


@runtime_checkable
class Signer(Protocol):
    """Signs manifests with an Ed25519 key. A KMS implements it with its sign call; the key never leaves it."""

    @property
    def ref(self) -> str:
        """The reference it was resolved from (``file://...``, ``kms://...``), recorded in the manifest."""
        ...

    def public_key(self) -> bytes:
        """The 32 raw bytes of the Ed25519 public key."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        ...


def fingerprint(raw_public_key: bytes) -> str:
    """``sha256:<hex>`` of a raw Ed25519 public key: what a device pins."""
    return "sha256:" + hashlib.sha256(raw_public_key).hexdigest()


def key_id(raw_public_key: bytes) -> str:
    """A short, non-secret id of a public key (the fingerprint's first 16 hex digits)."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def public_pem(raw_public_key: bytes) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo), as ``signer.pub`` and ``openssl pkey -pubin`` hold it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(raw_public_key)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes | str, what: str = "the public key") -> bytes:
    """The raw 32 bytes of an Ed25519 public key given as PEM (or as its 32 raw bytes); SigningKeyError otherwise."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) == RAW_PUBLIC_BYTES and not data.startswith(b"-----"):
        return data
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{what} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{what} is a {type(key).__name__.removeprefix('_')}, not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify_signature(raw_public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``raw_public_key``'s Ed25519 signature of ``data``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw_public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class FileSigner:
    """An Ed25519 private key read from a PEM file; held in memory, never written anywhere else."""

    def __init__(self, pem: bytes, ref: str) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            # the library's message never quotes key material
            raise SigningKeyError(f"{ref}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{ref}: holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 private key")
        self._key = key
        self._ref = ref
        self._public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def ref(self) -> str:
        """The reference it came from."""
        return self._ref

    def public_key(self) -> bytes:
        """The raw public key."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """Ed25519 over ``data``."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"FileSigner(ref={self._ref!r}, public={fingerprint(self._public)!r})"


SignerFactory = Callable[[str], Signer]
_PROVIDERS: dict[str, SignerFactory] = {}


def register_signer(scheme: str, factory: SignerFactory) -> None:
    """Resolve signing key references of ``scheme`` (``"kms"``) with ``factory(ref)`` in this process."""
    _PROVIDERS[scheme] = factory


def _env_provider() -> SignerFactory | None:
    return provider_from_environment(PROVIDER_VARIABLE, SigningKeyError)


key_path = key_file_path  # the same file:// rules as the encryption keys


def _create_key_file(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if not create_secret_file(path, pem):  # created concurrently: use that one
        return
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    log.warning(
        "created a new Ed25519 signing key %s (public key %s): back it up; what trusts it (edge devices, the audit "
        "checkpoints) cannot verify signatures made by a replacement",
        path,
        fingerprint(public),
    )


def resolve_signer(ref: str, root: str | Path | None = None, *, create: bool = False) -> Signer:
    """The signer for ``ref``; SigningKeyError naming the reference when it cannot be had (fails closed)."""
    scheme, sep, rest = ref.partition("://")
    if not sep or not rest:
        raise SigningKeyError(f"{ref!r} is not a signing key reference (file://PATH or kms://NAME)")
    if scheme == "file":
        path = key_path(ref, root)
        if create and not path.exists():
            _create_key_file(path)
        try:
            mode = path.stat().st_mode
            pem = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"{ref}: cannot read signing key {path}: {exc.strerror or exc}") from None
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("signing key %s is readable by group or others (mode %o); chmod 600 it", path, mode & 0o777)
        return FileSigner(pem, ref)
    factory = _PROVIDERS.get(scheme) or _env_provider()
    if factory is None:
        raise SigningKeyError(
            f"no signing provider is configured for {ref}: register one with "
            f"mlspec.edge.register_signer({scheme!r}, factory) or set {PROVIDER_VARIABLE}=module:function "
            "(see docs/edge.md); refusing to build an edge package without its signature"
        )
    signer = factory(ref)
    if len(signer.public_key()) != RAW_PUBLIC_BYTES:
        raise SigningKeyError(f"{ref}: the provider's public key is not a raw Ed25519 key (32 bytes)")
    return signer


def default_signing_ref(kms_key: str | None, environment: str, signing_key: str | None = None) -> str:
    """The signing key of an edge Deployment without ``edge.signing_key``: the environment's
    ``encryption.signing_key``, else ``<kms_key file>.ed25519`` when the environment's key is a file;
    SigningKeyError (saying to set it) otherwise."""
    if signing_key:
        return signing_key
    if kms_key and kms_key.startswith("file://"):
        return kms_key + SUFFIX
    if kms_key:
        raise SigningKeyError(
            f"environment '{environment}' keys its artifacts with {kms_key}, so edge packages there need a named "
            "signing key: set the environment's spec.encryption.signing_key or the Deployment's "
            "spec.edge.signing_key (kms://NAME through a signing provider, or file://PATH)"
        )
    raise SigningKeyError(
        f"environment '{environment}' has no encryption.kms_key to derive an edge signing key from: "
        "set spec.edge.signing_key (file://PATH or kms://NAME)"
    )
