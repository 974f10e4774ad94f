"""The crypto package's exceptions (no imports, so every module can share them)."""

from __future__ import annotations


class CryptoError(Exception):
    """An artifact cannot be encrypted or decrypted; the message says which and why."""


class IntegrityError(CryptoError):
    """The envelope or its payload was altered, or the key does not open it."""


class KeyProviderError(CryptoError):
    """A key reference cannot be resolved (unknown scheme, no provider configured, missing or bad key file)."""
