"""Verify an exported mlspec audit log: ``python verify.py [EXPORT_FOLDER]`` (exit 0 intact, 1 not).

This file is copied, as is, into every ``mlspec audit export`` folder so that an auditor can check the log
without mlspec: it needs only the Python standard library and the ``cryptography`` package. It checks

* the hash chain of ``audit.jsonl``: each record's ``hash`` is sha256 over its predecessor's hash and its
  fields as canonical JSON (sorted keys, no spaces), joined by a NUL byte; the first record follows 64 zeros;
* every checkpoint in ``checkpoints.jsonl``: its Ed25519 signature over the checkpoint's fields but
  ``signature``, as canonical JSON, under ``keys/<environment>.pem`` (whose sha256 fingerprint it names);
  that the log still holds as many records as it counted, and that the record it ends at has the hash it signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
RECORD_FIELDS = ("seq", "environment", "at", "actor", "revision", "plan_hash", "record")


def canonical(data: Any) -> str:
    """Compact JSON with sorted keys: the bytes every hash and signature covers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def chain_problems(records: list[dict[str, Any]]) -> list[str]:
    """Records that were edited, removed or reordered."""
    problems, prev = [], GENESIS
    for expected, record in enumerate(records, 1):
        if record["seq"] != expected:
            problems.append(f"record {record['seq']}: expected record {expected} here (removed or reordered)")
        if record["prev_hash"] != prev:
            problems.append(f"record {record['seq']}: does not follow the record before it")
        body = canonical({name: record[name] for name in RECORD_FIELDS})
        if hashlib.sha256(f"{record['prev_hash']}\0{body}".encode()).hexdigest() != record["hash"]:
            problems.append(f"record {record['seq']}: its content does not match its hash (edited)")
        prev = record["hash"]
    return problems


def checkpoint_problems(folder: Path, records: list[dict[str, Any]], checkpoints: list[dict[str, Any]]) -> list[str]:
    """Checkpoints that do not verify, and what the verified ones say the log lost."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems: list[str] = []
    for checkpoint in sorted(checkpoints, key=lambda c: (c["count"], c["at"])):
        label = f"checkpoint of {checkpoint['environment']} at {checkpoint['at']} ({checkpoint['count']} records)"
        if checkpoint.get("signature"):
            pem = folder / "keys" / f"{checkpoint['environment']}.pem"
            key = serialization.load_pem_public_key(pem.read_bytes())
            assert isinstance(key, Ed25519PublicKey), f"{pem} is not an Ed25519 public key"
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            if checkpoint["key"] != "sha256:" + hashlib.sha256(raw).hexdigest():
                problems.append(f"{label} is signed by another key than {pem.name}")
                continue
            payload = canonical({k: v for k, v in checkpoint.items() if k != "signature"}).encode()
            try:
                key.verify(base64.b64decode(checkpoint["signature"]), payload)
            except (InvalidSignature, ValueError):
                problems.append(f"{label} does not verify (edited or forged)")
                continue
        if checkpoint["count"] > len(records):
            problems.append(f"{label}: the log holds {len(records)} records (truncated)")
        elif checkpoint["count"] and records[checkpoint["count"] - 1]["hash"] != checkpoint["head"]:
            problems.append(f"{label}: record {checkpoint['count']} is not the one it signed (rewritten)")
    return problems


def read_lines(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    """Check the export folder ``argv[0]`` (default: this file's folder); print what is wrong."""
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parent
    records = read_lines(folder / "audit.jsonl")
    checkpoints = read_lines(folder / "checkpoints.jsonl")
    problems = chain_problems(records) + checkpoint_problems(folder, records, checkpoints)
    for problem in problems:
        print(f"FAIL {problem}")  # noqa: T201
    signed = sum(1 for c in checkpoints if c.get("signature"))
    verdict = "intact" if not problems else f"{len(problems)} problem(s)"
    print(f"{len(records)} record(s), {len(checkpoints)} checkpoint(s) ({signed} signed): {verdict}")  # noqa: T201
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
