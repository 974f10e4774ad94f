"""kms:// keys through AWS KMS, against a KMS API server on loopback (moto's server mode, started by
scripts/test_services.py): envelopes seal and open, are bound to their header, fail closed, and the reference
platform's dev, staging and prod seal their artifacts with their own keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlspec.crypto import IntegrityError, KeyProviderError, KeyResolver, decrypt, encrypt, open_envelope
from mlspec.crypto.aws_kms import AwsKmsKey, parse
from tests import services
from tests.conftest import REPO

REGION = "me-central-1"


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """boto3 pointed at the loopback KMS server, as a deployment would set AWS_ENDPOINT_URL_KMS."""
    import boto3

    url = services.s3_url()  # moto's server answers every AWS API it implements on one port
    for name, value in {"AWS_ENDPOINT_URL_KMS": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY":
                        "testing", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield boto3.client("kms", region_name=REGION)


def new_key(kms: Any, alias: str) -> str:
    arn = kms.create_key(Description=f"mlspec test {alias}")["KeyMetadata"]["Arn"]
    try:
        kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
    except kms.exceptions.AlreadyExistsException:
        kms.update_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
    return str(arn)


def test_references_name_a_key_and_a_region() -> None:
    assert parse("kms://aws/alias/prod-platform?region=me-central-1") == ("alias/prod-platform", "me-central-1")
    assert parse("kms://aws/arn:aws:kms:me-central-1:111122223333:key/abc") == (
        "arn:aws:kms:me-central-1:111122223333:key/abc", None)  # fmt: skip
    assert parse("kms://prod-platform") == ("alias/prod-platform", None)
    with pytest.raises(KeyProviderError, match="names no KMS key"):
        parse("kms://aws/")


def test_an_envelope_seals_and_opens_through_kms_bound_to_its_header(kms: Any) -> None:
    arn = new_key(kms, "test-seal")
    ref = f"kms://aws/alias/test-seal?region={REGION}"
    kek = KeyResolver().resolve(ref)  # built in: no provider to register
    assert kek.key_id == arn, "the key is identified by its ARN, whatever alias named it"
    blob = encrypt(b"model weights", kek, "mlspec:prod/models/fraud")
    envelope = open_envelope(blob)
    assert envelope.kek_ref == ref and envelope.kek_id == arn and b"model weights" not in blob
    assert decrypt(blob, KeyResolver(), identity="mlspec:prod/models/fraud") == b"model weights"
    # the wrapped data key is bound to the header: KMS itself refuses another context
    with pytest.raises(IntegrityError):
        decrypt(blob, KeyResolver(), identity="mlspec:prod/models/other")
    other = new_key(kms, "test-other")
    assert other != arn
    wrong = AwsKmsKey(ref, "alias/test-other", REGION)
    with pytest.raises((IntegrityError, KeyProviderError)):
        wrong.unwrap(envelope.wrap_nonce, envelope.wrapped_key, envelope.wrap_aad(ref, arn))


def test_unwrapped_keys_are_cached_for_a_lease_and_kms_failures_fail_closed(
    kms: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    new_key(kms, "test-cache")
    calls: list[str] = []
    client = boto3.client("kms", region_name=REGION)
    client.meta.events.register("before-call.kms.*", lambda model, **_: calls.append(model.name))
    kek = AwsKmsKey("kms://aws/alias/test-cache", "alias/test-cache", client=client)
    nonce, wrapped = kek.wrap(b"k" * 32, b"header")
    assert kek.unwrap(nonce, wrapped, b"header") == kek.unwrap(nonce, wrapped, b"header") == b"k" * 32
    assert calls == ["Encrypt", "Decrypt"], "the second unwrap came from the lease"
    monkeypatch.setenv("MLSPEC_KMS_CACHE_SECONDS", "0")
    uncached = AwsKmsKey("kms://aws/alias/test-cache", "alias/test-cache", client=client)
    uncached.unwrap(nonce, wrapped, b"header")
    uncached.unwrap(nonce, wrapped, b"header")
    assert calls.count("Decrypt") == 3
    missing = AwsKmsKey("kms://aws/alias/no-such-key", "alias/no-such-key", REGION)
    with pytest.raises(KeyProviderError, match="KMS Encrypt failed: NotFoundException"):
        missing.wrap(b"k" * 32, b"header")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")  # nothing listens: no key, no plaintext
    with pytest.raises(KeyProviderError, match="KMS Encrypt failed"):
        AwsKmsKey("kms://aws/alias/test-cache", "alias/test-cache", REGION).wrap(b"k" * 32, b"header")


def test_the_reference_environments_seal_their_artifacts_with_their_own_kms_keys(
    kms: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """dev, staging and prod name kms://<env>-platform; with the AWS provider those are their KMS aliases, and a
    pipeline step's output sealed in one environment does not open with another's key."""
    from mlspec.app.project import Project
    from mlspec.runtime.context import RuntimeContext

    monkeypatch.setenv("MLSPEC_KMS_PROVIDER", "mlspec.crypto.aws_kms:provider")
    project = Project.open(REPO)
    sealed: dict[str, Path] = {}
    for env in ("dev", "staging", "prod"):
        graph = project.resolve(env).graph
        assert graph is not None
        ref = graph.env.spec.encryption.kms_key
        assert ref == f"kms://{env}-platform"
        new_key(kms, f"{env}-platform")
        context = RuntimeContext(env, str(tmp_path), str(tmp_path), str(tmp_path), "", "", kms_key=ref)
        path = tmp_path / f"{env}-model.onnx"
        path.write_bytes(f"{env} weights".encode())
        context.seal(path, "models/fraud-detector")
        assert open_envelope(path.read_bytes()).kek_ref == ref
        assert context.read(path) == f"{env} weights".encode()
        sealed[env] = path
    prod_blob = sealed["prod"].read_bytes()
    envelope = open_envelope(prod_blob)
    dev_key = KeyResolver().resolve("kms://dev-platform")
    with pytest.raises((IntegrityError, KeyProviderError)):
        dev_key.unwrap(envelope.wrap_nonce, envelope.wrapped_key, envelope.wrap_aad(envelope.kek_ref, dev_key.key_id))
    assert os.environ["AWS_ENDPOINT_URL_KMS"].startswith("http://127.0.0.1")
