"""The envelope: one file holding an artifact encrypted with its own data key, and that key wrapped by the KEK.

Layout (format 1)::

    MAGIC (8 bytes, b"MLSPECE1") | header length (4 bytes, big-endian) | header (canonical JSON) | ciphertext

The header (compact JSON, sorted keys, ASCII) is ``{"v": 1, "alg": "AES-256-GCM", "aad": identity,
"nonce": b64, "sha256": plaintext hex, "size": n, "kek": {"ref", "kid", "nonce", "wrapped"}}``. The ciphertext is
AES-GCM of the payload under the 256-bit data key, with a fresh 96-bit nonce; its associated data is the header
without ``kek`` (identity, sizes, digest, nonce: all authenticated by the payload's tag). The data key is wrapped
by the KEK with the same binding plus the KEK's ``ref`` and ``kid`` as associated data. Any changed byte fails:
the magic and length are checked, the header must be canonical and complete, and every field is under a tag.
Rotation (:func:`rewrap`) replaces only ``kek``: the ciphertext bytes stay the same.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.crypto.errors import CryptoError, IntegrityError, KeyProviderError
from mlspec.crypto.keys import KEY_BYTES, NONCE_BYTES, KeyEncryptionKey, KeyResolver

MAGIC = b"MLSPECE1"
FORMAT_VERSION = 1
ALGORITHM = "AES-256-GCM"
MAX_HEADER = 64 * 1024
_PREFIX = len(MAGIC) + 4
_FIELDS = {"v", "alg", "aad", "nonce", "sha256", "size", "kek"}
_KEK_FIELDS = {"ref", "kid", "nonce", "wrapped"}

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Envelope",
    "decrypt",
    "decrypt_file",
    "encrypt",
    "encrypt_file",
    "is_envelope",
    "open_envelope",
    "read_plain",
    "rewrap",
    "rewrap_file",
]

Keys = KeyResolver | KeyEncryptionKey


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise IntegrityError(f"envelope header: {what} is not base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise IntegrityError(f"envelope header: {what} is not valid base64") from exc


@dataclass(frozen=True)
class Envelope:
    """A parsed (not yet decrypted) envelope."""

    identity: str
    nonce: bytes
    sha256: str
    size: int
    kek_ref: str
    kek_id: str
    wrap_nonce: bytes
    wrapped_key: bytes
    ciphertext: bytes
    version: int = FORMAT_VERSION

    def binding(self) -> bytes:
        """Associated data of the payload: every header field except the wrapped key."""
        return b"mlspec-payload\x00" + _canonical(self._body())

    def wrap_aad(self, ref: str, kid: str) -> bytes:
        """Associated data of the wrapped data key."""
        return b"mlspec-dek\x00" + _canonical({**self._body(), "kek": {"ref": ref, "kid": kid}})

    def _body(self) -> dict[str, Any]:
        return {"v": self.version, "alg": ALGORITHM, "aad": self.identity, "nonce": _b64(self.nonce),
                "sha256": self.sha256, "size": self.size}  # fmt: skip

    def header(self) -> bytes:
        """The canonical header bytes."""
        kek = {"ref": self.kek_ref, "kid": self.kek_id, "nonce": _b64(self.wrap_nonce)}
        kek["wrapped"] = _b64(self.wrapped_key)
        return _canonical({**self._body(), "kek": kek})

    def to_bytes(self) -> bytes:
        """The whole envelope."""
        header = self.header()
        return MAGIC + len(header).to_bytes(4, "big") + header + self.ciphertext


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` (or a file's first bytes) starts like an mlspec envelope."""
    return data[: len(MAGIC)] == MAGIC


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise IntegrityError(f"envelope header: {message} (corrupted or not written by mlspec)")


def open_envelope(blob: bytes) -> Envelope:
    """Parse ``blob``'s header; raise IntegrityError when it is not a well-formed format-1 envelope."""
    if not is_envelope(blob):
        raise IntegrityError("not an mlspec encrypted artifact (magic bytes differ)")
    length = int.from_bytes(blob[len(MAGIC) : _PREFIX], "big")
    _check(0 < length <= MAX_HEADER and _PREFIX + length <= len(blob), f"bad header length {length}")
    raw = blob[_PREFIX : _PREFIX + length]
    try:
        data = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError("envelope header is not valid JSON (corrupted)") from None
    _check(isinstance(data, dict) and set(data) == _FIELDS, "unexpected fields")
    _check(data["v"] == FORMAT_VERSION, f"unsupported format version {data['v']!r}")
    _check(data["alg"] == ALGORITHM, f"unsupported algorithm {data['alg']!r}")
    kek = data["kek"]
    _check(isinstance(kek, dict) and set(kek) == _KEK_FIELDS, "unexpected key fields")
    _check(all(isinstance(data[k], str) for k in ("aad", "sha256")), "identity and sha256 must be text")
    _check(all(isinstance(kek[k], str) for k in ("ref", "kid")), "key ref and id must be text")
    _check(isinstance(data["size"], int) and not isinstance(data["size"], bool), "size must be an integer")
    envelope = Envelope(
        identity=data["aad"],
        nonce=_unb64(data["nonce"], "nonce"),
        sha256=data["sha256"],
        size=data["size"],
        kek_ref=kek["ref"],
        kek_id=kek["kid"],
        wrap_nonce=_unb64(kek["nonce"], "key nonce"),
        wrapped_key=_unb64(kek["wrapped"], "wrapped key"),
        ciphertext=blob[_PREFIX + length :],
    )
    _check(envelope.header() == raw, "not in canonical form")
    _check(len(envelope.nonce) == NONCE_BYTES, "nonce must be 96 bits")
    return envelope


def encrypt(plaintext: bytes, kek: KeyEncryptionKey, identity: str) -> bytes:
    """An envelope of ``plaintext`` under a fresh data key wrapped by ``kek``; ``identity`` is associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    draft = Envelope(
        identity=identity,
        nonce=secrets.token_bytes(NONCE_BYTES),
        sha256=hashlib.sha256(plaintext).hexdigest(),
        size=len(plaintext),
        kek_ref=kek.ref,
        kek_id=kek.key_id,
        wrap_nonce=b"",
        wrapped_key=b"",
        ciphertext=b"",
    )
    ciphertext = AESGCM(data_key).encrypt(draft.nonce, plaintext, draft.binding())
    wrap_nonce, wrapped = kek.wrap(data_key, draft.wrap_aad(kek.ref, kek.key_id))
    return replace(draft, wrap_nonce=wrap_nonce, wrapped_key=wrapped, ciphertext=ciphertext).to_bytes()


def _kek(envelope: Envelope, keys: Keys) -> KeyEncryptionKey:
    kek = keys.resolve(envelope.kek_ref) if isinstance(keys, KeyResolver) else keys
    if kek.key_id != envelope.kek_id:
        raise IntegrityError(
            f"wrong key: the artifact was encrypted with key id {envelope.kek_id} ({envelope.kek_ref}), "
            f"the key given ({kek.ref}) has id {kek.key_id}"
        )
    return kek


def _data_key(envelope: Envelope, keys: Keys) -> bytes:
    kek = _kek(envelope, keys)
    data_key = kek.unwrap(envelope.wrap_nonce, envelope.wrapped_key, envelope.wrap_aad(envelope.kek_ref, kek.key_id))
    if len(data_key) != KEY_BYTES:
        raise IntegrityError("the unwrapped data key has the wrong length")
    return data_key


def decrypt(blob: bytes, keys: Keys, *, identity: str | None = None) -> bytes:
    """The plaintext of an envelope, authenticated and checked against its recorded sha256 and size.

    ``keys``: a KEK, or a resolver for the recorded key reference. ``identity``, when given, must equal the
    associated data the artifact was encrypted for. Raises IntegrityError (altered bytes, wrong key) or
    KeyProviderError (the key cannot be had); never returns unauthenticated bytes.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    envelope = open_envelope(blob)
    if identity is not None and envelope.identity != identity:
        raise IntegrityError(f"the artifact was encrypted for {envelope.identity!r}, not {identity!r}")
    data_key = _data_key(envelope, keys)
    try:
        plaintext = AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, envelope.binding())
    except (InvalidTag, ValueError):
        raise IntegrityError("the payload fails authentication (ciphertext or tag altered)") from None
    if len(plaintext) != envelope.size or hashlib.sha256(plaintext).hexdigest() != envelope.sha256:
        raise IntegrityError("the decrypted payload does not match the recorded sha256")  # cannot happen unaltered
    return plaintext


def rewrap(blob: bytes, old: Keys, new: KeyEncryptionKey) -> bytes:
    """The same envelope with its data key re-wrapped from ``old`` to ``new``; the ciphertext is not touched."""
    envelope = open_envelope(blob)
    data_key = _data_key(envelope, old)
    bound = replace(envelope, kek_ref=new.ref, kek_id=new.key_id)
    wrap_nonce, wrapped = new.wrap(data_key, bound.wrap_aad(new.ref, new.key_id))
    return replace(bound, wrap_nonce=wrap_nonce, wrapped_key=wrapped).to_bytes()


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CryptoError(f"cannot read {path}: {exc.strerror or exc}") from exc


def encrypt_file(path: str | Path, kek: KeyEncryptionKey, identity: str, out: str | Path | None = None) -> str:
    """Encrypt ``path`` into ``out`` (default: in place, atomically, mode 0600); returns the plaintext's sha256."""
    plaintext = _read(path)
    atomic_write(Path(out or path), encrypt(plaintext, kek, identity), mode=0o600)
    return hashlib.sha256(plaintext).hexdigest()


def decrypt_file(path: str | Path, keys: Keys, *, identity: str | None = None) -> bytes:
    """The plaintext of the envelope at ``path`` (in memory); the errors of :func:`decrypt`, naming the file."""
    try:
        return decrypt(_read(path), keys, identity=identity)
    except CryptoError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def read_plain(path: str | Path, keys: Keys | None) -> bytes:
    """A file's bytes, decrypted when it is an envelope (``keys`` then required), else as they are."""
    data = _read(path)
    if not is_envelope(data):
        return data
    if keys is None:
        raise KeyProviderError(f"{path} is encrypted and no key was given")
    try:
        return decrypt(data, keys)
    except CryptoError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def rewrap_file(path: str | Path, old: Keys, new: KeyEncryptionKey) -> None:
    """Re-wrap the envelope at ``path`` in place (atomically)."""
    atomic_write(Path(path), rewrap(_read(path), old, new), mode=0o600)
