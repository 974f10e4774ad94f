"""The rehearsal's stand-in KMS: kms://NAME is a key file in the folder the rehearsal names, or an error."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from mlspec.crypto.envelope import decrypt, encrypt
from mlspec.crypto.errors import KeyProviderError
from mlspec.crypto.keys import PROVIDER_VARIABLE, KeyResolver
from mlspec.crypto.standin import DIR_VARIABLE, key_file


def test_a_kms_reference_resolves_to_the_rehearsal_key_through_the_provider_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = key_file(tmp_path, "kms://prod-platform")
    path.write_bytes(secrets.token_bytes(32))
    monkeypatch.setenv(PROVIDER_VARIABLE, "mlspec.crypto.standin:provider")
    monkeypatch.setenv(DIR_VARIABLE, str(tmp_path))
    kek = KeyResolver(tmp_path).resolve("kms://prod-platform")
    assert kek.ref == "kms://prod-platform"
    sealed = encrypt(b"model bytes", kek, "mlspec:prod/m")
    assert decrypt(sealed, KeyResolver(tmp_path)) == b"model bytes"


@pytest.mark.parametrize("folder", [None, "empty"])
def test_without_its_key_the_stand_in_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str | None
) -> None:
    monkeypatch.setenv(PROVIDER_VARIABLE, "mlspec.crypto.standin:provider")
    if folder is None:
        monkeypatch.delenv(DIR_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(DIR_VARIABLE, str(tmp_path))
    with pytest.raises(KeyProviderError, match="kms://prod-platform"):
        KeyResolver(tmp_path).resolve("kms://prod-platform")
