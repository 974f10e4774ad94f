"""Sampled request logging: JSON lines (features by name, timestamp, variant, score) appended by a writer thread."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import numpy as np

log = logging.getLogger("mlspec.serving")


class RequestLog:
    """Buffers sampled requests and appends them to a JSON-lines file at least every ``interval`` seconds.

    The response path only appends a tuple to a list; encoding and file I/O happen on the writer thread.
    """

    def __init__(
        self, path: str, sample_rate: float, features: tuple[str, ...], deployment: str, interval: float = 1.0
    ) -> None:
        """A log writing to ``path`` (created when missing) that samples ``sample_rate`` of requests."""
        self.path = path
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
            with open(self.path, "a", encoding="utf-8") as handle:
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
