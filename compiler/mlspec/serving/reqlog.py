"""Sampled request logging: JSON lines (features by name, timestamp, variant, score) appended by a writer thread.

With a key the log holds request features of real customers sealed at rest: each flush is one line
``{"sealed": "<base64 envelope>"}`` whose plaintext is that flush's JSON lines (a data key per flush, wrapped
by the environment's key; :func:`mlspec.runtime.drift.read_request_log` opens them in memory).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mlspec.serving.config import ConfigError, ServingConfig

if TYPE_CHECKING:
    from mlspec.crypto.keys import KeyEncryptionKey

SEALED = "sealed"  # the field of a sealed flush line

log = logging.getLogger("mlspec.serving")


class RequestLog:
    """Buffers sampled requests and appends them to a JSON-lines file at least every ``interval`` seconds.

    The response path only appends a tuple to a list; encoding and file I/O happen on the writer thread.
    """

    def __init__(  # noqa: PLR0917
        self,
        path: str,
        sample_rate: float,
        features: tuple[str, ...],
        deployment: str,
        interval: float = 1.0,
        kek: KeyEncryptionKey | None = None,
    ) -> None:
        """A log writing to ``path`` (created when missing) that samples ``sample_rate`` of requests; with ``kek``
        every flush is sealed."""
        self.path = path
        self.kek = kek
        self.sample_rate = sample_rate
        self.features = features
        self.deployment = deployment
        self.interval = interval
        self.written = 0
        self._pending: list[tuple[float, str, str, np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlspec-reqlog", daemon=True)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._thread.start()

    def add(self, variant: str, version: str, rows: np.ndarray, scores: np.ndarray) -> None:
        """Queue one answered request (its rows and scores) for writing."""
        item = (time.time(), variant, version, rows, scores)
        with self._lock:
            self._pending.append(item)

    def _lines(self, items: list[tuple[float, str, str, np.ndarray, np.ndarray]]) -> str:
        out: list[str] = []
        features = self.features
        for stamp, variant, version, rows, scores in items:
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}Z"
            flat = scores.reshape(len(rows), -1).tolist()
            for values, score in zip(rows.tolist(), flat, strict=False):
                record: dict[str, Any] = dict(zip(features, values, strict=False))
                record["timestamp"] = when
                record["deployment"] = self.deployment
                record["variant"] = variant
                record["model_version"] = version
                record["score"] = score[0] if len(score) == 1 else score
                out.append(json.dumps(record))
        return "\n".join(out) + "\n" if out else ""

    def flush(self) -> None:
        """Write everything queued so far."""
        with self._lock:
            items, self._pending = self._pending, []
        if not items:
            return
        try:
            text = self._lines(items)
            if self.kek is not None:
                from mlspec.crypto import encrypt

                sealed = encrypt(text.encode(), self.kek, f"mlspec:requests/{self.deployment}")
                text = json.dumps({SEALED: base64.b64encode(sealed).decode("ascii")}) + "\n"
            # owner-only: the log holds customers' features (sealed or not)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(text)
            self.written += sum(len(i[3]) for i in items)
        except (OSError, ValueError) as exc:
            log.error("request log %s: cannot write %d requests: %s", self.path, len(items), exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
        self.flush()

    def close(self) -> None:
        """Stop the writer thread after a last flush."""
        self._stop.set()
        self._thread.join(timeout=10)


def seal_key(ref: str) -> KeyEncryptionKey:
    """The request log's key (file:// against $MLSPEC_PROJECT_ROOT); ConfigError when it cannot be had."""
    from mlspec.crypto import CryptoError, KeyResolver

    try:
        return KeyResolver().resolve(ref)
    except CryptoError as exc:
        raise ConfigError(f"the request log is sealed with {ref}, which cannot be resolved: {exc}") from None


def check_seal_key(config: ServingConfig) -> None:
    """ConfigError when ``config`` seals its request log with a key that cannot be resolved here."""
    if config.log is not None and config.log.enabled and config.log.seal_key:
        seal_key(config.log.seal_key)


def reopen_request_log(current: RequestLog | None, config: ServingConfig) -> RequestLog | None:
    """The request log ``config`` asks for: ``current`` when it is the same log, else a new one (``current``
    closed); None when the config logs nothing. ConfigError when its seal key cannot be had (fails closed)."""
    wanted = config.log if config.log is not None and config.log.enabled else None
    if current is not None and (
        wanted is None
        or (current.path, current.sample_rate, current.kek.ref if current.kek else None)
        != (wanted.path, wanted.sample_rate, wanted.seal_key)
    ):
        current.close()
        current = None
    if wanted is not None and current is None and wanted.sample_rate > 0:
        kek = seal_key(wanted.seal_key) if wanted.seal_key else None  # no key, no server
        current = RequestLog(wanted.path, wanted.sample_rate, config.features, config.deployment, kek=kek)
    return current
