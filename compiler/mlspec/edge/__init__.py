"""Edge packages: a Deployment's model (optionally int8) with its schema, digests and an Ed25519 signature.

Light on purpose: importing this package loads neither onnxruntime nor numpy (the builder imports them when it
runs); the verifier needs only ``cryptography``. See ``docs/edge.md`` for the format, keys and verification.
"""

from __future__ import annotations

from mlspec.edge.errors import EdgeBuildError, EdgeError, PackageInvalidError, SigningKeyError
from mlspec.edge.signing import (
    FileSigner,
    Signer,
    default_signing_ref,
    fingerprint,
    load_public_key,
    register_signer,
    resolve_signer,
)
from mlspec.edge.verify import Manifest, read_package, verify_package

__all__ = [
    "EdgeBuildError",
    "EdgeError",
    "FileSigner",
    "Manifest",
    "PackageInvalidError",
    "Signer",
    "SigningKeyError",
    "default_signing_ref",
    "fingerprint",
    "load_public_key",
    "read_package",
    "register_signer",
    "resolve_signer",
    "verify_package",
]
