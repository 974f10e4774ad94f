"""The envelope format and key providers on the real ``cryptography`` library."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlspec.crypto import (
    MAGIC,
    CryptoError,
    IntegrityError,
    KeyProviderError,
    KeyResolver,
    LocalKey,
    decrypt,
    decrypt_file,
    encrypt,
    encrypt_file,
    is_envelope,
    open_envelope,
    read_plain,
    register_provider,
    rewrap,
    rewrap_file,
)
from mlspec.crypto.keys import KEY_BYTES

PAYLOAD = os.urandom(5000) + b"the model"


def test_round_trip_and_header() -> None:
    kek = LocalKey.generate("file://k.key")
    blob = encrypt(PAYLOAD, kek, "mlspec:local/m/model.onnx")
    assert is_envelope(blob) and blob.startswith(MAGIC) and PAYLOAD not in blob
    envelope = open_envelope(blob)
    assert envelope.identity == "mlspec:local/m/model.onnx" and envelope.size == len(PAYLOAD)
    assert envelope.kek_ref == "file://k.key" and envelope.kek_id == kek.key_id
    assert len(envelope.nonce) == 12 and len(envelope.ciphertext) == len(PAYLOAD) + 16
    assert decrypt(blob, kek) == PAYLOAD
    assert decrypt(blob, kek, identity="mlspec:local/m/model.onnx") == PAYLOAD
    with pytest.raises(IntegrityError, match="encrypted for"):
        decrypt(blob, kek, identity="mlspec:local/other/model.onnx")
    again = encrypt(PAYLOAD, kek, "mlspec:local/m/model.onnx")  # fresh data key and nonces each time
    assert open_envelope(again).ciphertext != envelope.ciphertext and open_envelope(again).nonce != envelope.nonce


def test_wrong_key_fails_loudly() -> None:
    blob = encrypt(PAYLOAD, LocalKey.generate("file://a.key"), "x")
    with pytest.raises(IntegrityError, match="wrong key"):
        decrypt(blob, LocalKey.generate("file://b.key"))


def test_every_flipped_byte_is_detected() -> None:
    kek = LocalKey.generate("file://k.key")
    blob = encrypt(b"small payload", kek, "id")
    header_end = len(blob) - len(open_envelope(blob).ciphertext)
    positions = list(range(len(blob)))  # magic, length, every header byte, payload, tag
    for position in positions:
        for bit in (0x01, 0x80):
            broken = bytearray(blob)
            broken[position] ^= bit
            with pytest.raises(CryptoError):
                decrypt(bytes(broken), kek)
    assert header_end < len(blob) - 16  # the loop covered header, payload and the 16-byte tag
    with pytest.raises(IntegrityError):
        decrypt(blob[:-1], kek)  # truncated tag
    with pytest.raises(IntegrityError, match="magic"):
        decrypt(b"\x08\x01onnx-model", kek)


def test_rewrap_keeps_the_payload_and_changes_the_key(tmp_path: Path) -> None:
    old, new = LocalKey.generate("file://old.key"), LocalKey.generate("file://new.key")
    path = tmp_path / "model.onnx"
    path.write_bytes(PAYLOAD)
    sha = encrypt_file(path, old, "id")
    before = open_envelope(path.read_bytes())
    rewrap_file(path, old, new)
    after = open_envelope(path.read_bytes())
    assert after.ciphertext == before.ciphertext and after.nonce == before.nonce  # payload not re-encrypted
    assert after.kek_ref == "file://new.key" and after.wrapped_key != before.wrapped_key
    assert decrypt_file(path, new) == PAYLOAD and after.sha256 == sha
    with pytest.raises(IntegrityError, match="wrong key"):
        decrypt_file(path, old)
    with pytest.raises(IntegrityError, match="wrong key"):
        rewrap(path.read_bytes(), old, new)  # only the current key can rotate


def test_file_keys_relative_to_root_created_0600_only_when_asked(tmp_path: Path) -> None:
    ref = "file://.mlspec/keys/local.key"
    with pytest.raises(KeyProviderError, match="cannot read key file"):
        KeyResolver(tmp_path).resolve(ref)  # a reader never invents a key
    kek = KeyResolver(tmp_path, create=True).resolve(ref)
    path = tmp_path / ".mlspec/keys/local.key"
    assert path.stat().st_size == KEY_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyResolver(tmp_path).resolve(ref).key_id == kek.key_id  # same key on the next use
    assert KeyResolver(tmp_path).resolve(f"file://{path}").key_id == kek.key_id  # absolute paths too
    path.write_bytes(b"short")
    with pytest.raises(KeyProviderError, match="32 bytes"):
        KeyResolver(tmp_path).resolve(ref)


def test_resolver_decrypts_by_recorded_reference(tmp_path: Path) -> None:
    keys = KeyResolver(tmp_path, create=True)
    kek = keys.resolve("file://k.key")
    path = tmp_path / "data.parquet"
    path.write_bytes(PAYLOAD)
    encrypt_file(path, kek, "ref-data")
    assert read_plain(path, KeyResolver(tmp_path)) == PAYLOAD
    with pytest.raises(KeyProviderError, match="encrypted and no key"):
        read_plain(path, None)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"as is")
    assert read_plain(plain, None) == b"as is"


def test_kms_without_provider_fails_closed_and_names_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSPEC_KMS_PROVIDER", raising=False)
    with pytest.raises(KeyProviderError, match=r"no key provider is configured for kms://prod-models"):
        KeyResolver().resolve("kms://prod-models")
    memory = LocalKey.generate("kms://test-kms")
    register_provider("kms", lambda ref: memory)
    try:
        blob = encrypt(PAYLOAD, KeyResolver().resolve("kms://test-kms"), "id")
        assert decrypt(blob, KeyResolver()) == PAYLOAD
    finally:
        from mlspec.crypto import keys

        keys._PROVIDERS.pop("kms", None)
    with pytest.raises(KeyProviderError, match="kms://test-kms"):
        decrypt(blob, KeyResolver())  # the provider is gone: the artifact stays closed


def test_rotate_command(tmp_path: Path) -> None:
    keys = KeyResolver(tmp_path, create=True)
    path = tmp_path / "model.onnx"
    path.write_bytes(PAYLOAD)
    encrypt_file(path, keys.resolve("file://old.key"), "id")
    before = open_envelope(path.read_bytes()).ciphertext
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(tmp_path)}
    run = [sys.executable, "-m", "mlspec.crypto"]
    done = subprocess.run([*run, "rotate", "--old", "file://old.key", "--new", "file://new.key", "--create",
                           str(path)], capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert open_envelope(path.read_bytes()).ciphertext == before
    assert decrypt_file(path, KeyResolver(tmp_path)) == PAYLOAD
    assert open_envelope(path.read_bytes()).kek_ref == "file://new.key"
    shown = subprocess.run([*run, "inspect", str(path)], capture_output=True, text=True, env=env, check=False)
    assert '"key_ref": "file://new.key"' in shown.stdout
    again = subprocess.run([*run, "rotate", "--old", "file://old.key", "--new", "file://new.key", str(path)],
                           capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert again.returncode == 1 and "wrong key" in again.stderr
