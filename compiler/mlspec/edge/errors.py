"""The edge package's exceptions (no imports, so the verifier on a device can share them)."""

from __future__ import annotations


class EdgeError(Exception):
    """An edge package cannot be built, verified or run; the message says which file or step and why."""


class PackageInvalidError(EdgeError):
    """The package fails verification: a file is missing, extra or altered, or the signature does not hold."""


class EdgeBuildError(EdgeError):
    """The package cannot be built (the quantized model lost too much accuracy, the model is unfit, ...)."""


class SigningKeyError(EdgeError):
    """The signing key cannot be had (no provider for kms://, a missing or wrong key file) or a trusted key is bad."""
