"""Reading the model server's sampled request log (plain or sealed JSON lines) into one column per feature."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlspec.runtime.drift_result import DriftError
from mlspec.serving.reqlog import SEALED

if TYPE_CHECKING:
    from mlspec.crypto.envelope import Keys

_SCALAR = (str, int, float, bool)

SEALED_PREFIX = f'{{"{SEALED}":'  # how a sealed flush line starts (json.dumps of {SEALED: ...})


def _log_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.jsonl") if p.is_file())
    if path.is_file():
        return [path]
    raise DriftError(f"request log not found: {path}", hint="the model server writes it once it serves traffic")


def _records(files: list[Path], keys: Keys | None) -> Iterator[tuple[str, bool]]:
    """Every line of the log files, with whether it came out of a sealed (authenticated) flush."""
    for file in files:
        try:
            with file.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith(SEALED_PREFIX):  # one flush of a sealed log: its lines, decrypted in memory
                        for plain in _unseal(line, file, keys):
                            yield plain, True
                    else:
                        yield line, False
        except OSError as exc:
            raise DriftError(f"cannot read request log {file}: {exc.strerror or exc}") from exc


def _unseal(line: str, file: Path, keys: Keys | None) -> list[str]:
    """The plaintext lines of one sealed flush; DriftError without a key or when it does not open."""
    import base64
    import binascii

    from mlspec.crypto import CryptoError, decrypt

    if keys is None:
        raise DriftError(
            f"request log {file} is sealed with the environment's key and no key was given",
            hint="read it with keys=RuntimeContext.key_resolver() (mlspec monitor does)",
        )
    try:
        blob = base64.b64decode(json.loads(line)[SEALED], validate=True)
        return decrypt(blob, keys).decode("utf-8").splitlines(keepends=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DriftError(f"request log {file}: a sealed line is malformed: {exc}") from None
    except CryptoError as exc:
        raise DriftError(f"request log {file}: {exc}") from None


def _timestamp(record: Mapping[str, Any]) -> float | None:
    """Seconds since the epoch from ``ts`` (a number) or ``timestamp`` (ISO-8601, ``Z`` allowed); None if neither."""
    ts = record.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if ts is None and isinstance(record.get("timestamp"), str):
        try:
            when = datetime.fromisoformat(record["timestamp"])
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None


def _parse(line: str, features: Sequence[str]) -> tuple[float, tuple[Any, ...]] | None:
    """The timestamp and feature values of one log line, or None when the line is malformed."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    ts = _timestamp(record)
    values = record.get("features", record)  # nested {"features": {...}} or flat, as the model server writes
    if ts is None or not isinstance(values, dict):
        return None
    row = tuple(values.get(name) for name in features)
    if any(v is not None and not isinstance(v, _SCALAR) for v in row):
        return None
    return ts, row


def read_request_log(
    path: Path,
    features: list[str],
    *,
    since: float | None = None,
    limit: int | None = None,
    keys: Keys | None = None,
    sealed: bool = False,
) -> pd.DataFrame:
    """Read the model server's sampled request log into one column per feature, in ``features`` order.

    ``path`` is one JSON-lines file or a folder of them (``*.jsonl``, read in name order). Each line looks like
    ``{"ts": 1763870000.1, "variant": "stable", "features": {"txn_count_7d": 3, ...}, "score": 0.12}``; the
    flat form ``{"txn_count_7d": 3, ..., "timestamp": "2025-11-23T04:33:20.100000Z", "variant": ...}`` that
    ``mlspec.serving.reqlog`` writes is read too. A line that is not a JSON object with a time (numeric ``ts``
    or ISO-8601 ``timestamp``) and scalar feature values (a ``features`` object, else the record itself) is
    malformed: it is skipped and counted in ``frame.attrs["malformed_lines"]``. A feature missing from a
    line reads as missing (NaN/None). ``since`` keeps lines with ``ts >= since``; ``limit`` keeps the last
    ``limit`` kept lines (the most recent traffic). Blank lines are ignored. A sealed log (a line
    ``{"sealed": "<base64 envelope>"}`` per flush, see ``mlspec.serving.reqlog``) is decrypted in memory with
    ``keys``; without them, or with the wrong ones, it is a DriftError. With ``sealed`` (the environment seals
    its logs) only lines out of a sealed flush count: a plain line was not written by the server (AES-GCM
    authenticates every flush) and is rejected, counted in ``frame.attrs["unsealed_lines"]``.
    """
    if limit is not None and limit < 0:
        raise DriftError(f"limit must be 0 or more, not {limit}")
    files = _log_files(path)
    rows: deque[tuple[Any, ...]] = deque(maxlen=limit)
    malformed = unsealed = 0
    for line, authenticated in _records(files, keys):
        if not line.strip():
            continue
        if sealed and not authenticated:
            unsealed += 1
            continue
        parsed = _parse(line, features)
        if parsed is None:
            malformed += 1
        elif since is None or parsed[0] >= since:
            rows.append(parsed[1])
    frame = pd.DataFrame.from_records(list(rows), columns=list(features))
    frame.attrs["malformed_lines"] = malformed
    frame.attrs["unsealed_lines"] = unsealed
    frame.attrs["files"] = [str(f) for f in files]
    return frame
