"""A stand-in KMS for rehearsals: ``kms://NAME`` resolves to a local key file, never to a real KMS.

``mlspec rehearse`` sets ``MLSPEC_KMS_PROVIDER=mlspec.crypto.standin:provider`` and ``MLSPEC_STANDIN_KMS_DIR``
in every container, and writes one 32-byte key per reference there (mode 0600) before the first step: the steps
seal and open what they write exactly as they would with the environment's KMS, with keys that exist only in the
rehearsal's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlspec.crypto.errors import KeyProviderError
from mlspec.crypto.keys import KEY_BYTES, KeyEncryptionKey, LocalKey

DIR_VARIABLE = "MLSPEC_STANDIN_KMS_DIR"


def key_file(folder: Path, ref: str) -> Path:
    """The stand-in key file of a reference (``kms://prod-platform`` -> ``<folder>/kms_prod-platform.key``)."""
    return folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", ref) + ".key")


def provider(ref: str) -> KeyEncryptionKey:
    """The stand-in KEK of ``ref``: the key file the rehearsal wrote for it."""
    folder = os.environ.get(DIR_VARIABLE)
    if not folder:
        raise KeyProviderError(f"{ref}: the stand-in KMS has no key folder ({DIR_VARIABLE} is unset)")
    path = key_file(Path(folder), ref)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise KeyProviderError(f"{ref}: the stand-in KMS has no key at {path}: {exc.strerror or exc}") from exc
    if len(key) != KEY_BYTES:
        raise KeyProviderError(f"{ref}: the stand-in key {path} is not {KEY_BYTES} bytes")
    return LocalKey(key, ref)
