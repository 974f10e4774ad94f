"""Encryption at rest for model artifacts: AES-256-GCM envelopes whose data keys are wrapped by the environment's key.

Light on purpose (``cryptography`` only, imported when a key is used): the model server and the pipeline steps
import it. See ``docs/encryption.md`` for the format, the key providers and rotation.
"""

from __future__ import annotations

from mlspec.crypto.envelope import (
    FORMAT_VERSION,
    MAGIC,
    Envelope,
    decrypt,
    decrypt_file,
    encrypt,
    encrypt_file,
    is_envelope,
    open_envelope,
    read_plain,
    rewrap,
    rewrap_file,
)
from mlspec.crypto.errors import CryptoError, IntegrityError, KeyProviderError
from mlspec.crypto.keys import (
    KeyEncryptionKey,
    KeyResolver,
    LocalKey,
    register_provider,
    resolver,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "CryptoError",
    "Envelope",
    "IntegrityError",
    "KeyEncryptionKey",
    "KeyProviderError",
    "KeyResolver",
    "LocalKey",
    "decrypt",
    "decrypt_file",
    "encrypt",
    "encrypt_file",
    "is_envelope",
    "open_envelope",
    "read_plain",
    "register_provider",
    "resolver",
    "rewrap",
    "rewrap_file",
]
