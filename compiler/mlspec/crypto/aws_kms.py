"""AWS KMS as the key-encryption key behind ``kms://`` references (boto3).

References:

* ``kms://aws/<key>``: ``<key>`` is a key id, a key ARN, or ``alias/<name>``; ``?region=me-central-1`` picks
  the region (else boto3's own configuration: ``AWS_REGION``, profiles, instance metadata);
* ``kms://<name>`` with ``MLSPEC_KMS_PROVIDER=mlspec.crypto.aws_kms:provider``: the alias ``alias/<name>``, so
  the reference platform's provider-neutral ``kms://prod-platform`` is AWS KMS's ``alias/prod-platform``.

Data keys are made by mlspec and wrapped with ``Encrypt`` under the KMS key, bound to the envelope header by the
encryption context ``{"mlspec-header": sha256(header)}`` (KMS refuses to ``Decrypt`` with another context), and
unwrapped with ``Decrypt``. Unwrapped data keys are cached in memory for a lease (``MLSPEC_KMS_CACHE_SECONDS``,
300 by default; 0 turns it off), keyed by the wrapped bytes and header, so a server reading many files of one
envelope does not call KMS for each. Every KMS error fails closed as ``KeyProviderError`` (``IntegrityError``
when KMS says the ciphertext or context does not match); credentials come from boto3's usual chain and never
appear in a message. ``AWS_ENDPOINT_URL_KMS`` (or ``AWS_ENDPOINT_URL``) points boto3 at another KMS API server.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import urllib.parse
from typing import Any

from mlspec.crypto.errors import IntegrityError, KeyProviderError

CACHE_VARIABLE = "MLSPEC_KMS_CACHE_SECONDS"
DEFAULT_LEASE = 300.0


class AwsKmsKey:
    """A KMS key (a :class:`~mlspec.crypto.keys.KeyEncryptionKey`): the key material never leaves KMS."""

    def __init__(self, ref: str, key: str, region: str | None = None, client: Any = None) -> None:
        """The KMS key ``key`` (id, ARN or ``alias/NAME``) that ``ref`` names, in ``region``."""
        self._ref, self._key = ref, key
        if client is None:
            import boto3

            client = boto3.client("kms", region_name=region)
        self._client = client
        self._arn = ""
        lease = os.environ.get(CACHE_VARIABLE, "")
        try:
            self._lease = float(lease) if lease else DEFAULT_LEASE
        except ValueError:
            raise KeyProviderError(f"{CACHE_VARIABLE}={lease!r} is not a number of seconds") from None
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    @property
    def ref(self) -> str:
        """The reference it was resolved from."""
        return self._ref

    @property
    def key_id(self) -> str:
        """The key's ARN (``DescribeKey``): the same whichever alias or id the reference used."""
        if not self._arn:
            self._arn = str(self._call("DescribeKey", KeyId=self._key)["KeyMetadata"]["Arn"])
        return self._arn

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """``Encrypt`` under the KMS key, bound to ``aad``; KMS carries its own nonce, so none is returned."""
        answer = self._call("Encrypt", KeyId=self._key, Plaintext=data_key, EncryptionContext=_context(aad))
        return b"", bytes(answer["CiphertextBlob"])

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """``Decrypt`` (cached for the lease); IntegrityError when the wrapped key or header does not match."""
        slot = hashlib.sha256(wrapped + b"\0" + aad).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(slot)
            if cached is not None and cached[0] > now:
                return cached[1]
        answer = self._call("Decrypt", KeyId=self._key, CiphertextBlob=wrapped, EncryptionContext=_context(aad))
        data_key = bytes(answer["Plaintext"])
        if self._lease > 0:
            with self._lock:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}  # drop what ran out
                self._cache[slot] = (now + self._lease, data_key)
        return data_key

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        method = {"DescribeKey": "describe_key", "Encrypt": "encrypt", "Decrypt": "decrypt"}[operation]
        try:
            answer: dict[str, Any] = getattr(self._client, method)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise IntegrityError(
                    f"{self._ref}: KMS refuses to unwrap the data key ({code}): the envelope's header or wrapped "
                    "key was altered, or it was sealed under another key"
                ) from None
            raise KeyProviderError(f"{self._ref}: KMS {operation} failed: {code}: {message}") from None
        except BotoCoreError as exc:  # no credentials, no endpoint, a timeout
            raise KeyProviderError(f"{self._ref}: KMS {operation} failed: {exc}") from None
        return answer

    def __repr__(self) -> str:
        return f"AwsKmsKey(ref={self._ref!r}, key={self._key!r})"


def _context(aad: bytes) -> dict[str, str]:
    """The encryption context binding a wrapped key to its envelope header (KMS logs it: a digest, not the header)."""
    return {"mlspec-header": hashlib.sha256(aad).hexdigest()}


def parse(ref: str) -> tuple[str, str | None]:
    """The KMS key and region ``ref`` names: ``kms://aws/<key>[?region=R]``, or ``kms://<name>`` for
    ``alias/<name>``."""
    scheme, sep, rest = ref.partition("://")
    if scheme != "kms" or not sep or not rest:
        raise KeyProviderError(f"{ref!r} is not a kms:// reference")
    body, _, query = rest.partition("?")
    region = urllib.parse.parse_qs(query).get("region", [None])[0]
    key = body.removeprefix("aws/") if body.startswith("aws/") else f"alias/{body}"
    if not key or key in ("alias/", "aws"):
        raise KeyProviderError(f"{ref!r} names no KMS key: kms://aws/<key id, ARN or alias/NAME>")
    return key, region


def provider(ref: str) -> AwsKmsKey:
    """The KEK ``ref`` names in AWS KMS (``MLSPEC_KMS_PROVIDER=mlspec.crypto.aws_kms:provider``)."""
    key, region = parse(ref)
    try:
        return AwsKmsKey(ref, key, region)
    except ImportError:
        raise KeyProviderError(f"{ref}: AWS KMS needs boto3 (pip install 'mlspec[storage]')") from None
