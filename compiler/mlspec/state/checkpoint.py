"""Signed audit checkpoints, and how an audit log is verified against them.

The hash chain (``state/base.py``) shows an edited, removed or reordered record, but not a log cut short at its
end, nor one rewritten from some record on with fresh hashes, nor an emptied database. A checkpoint closes that:
after every audited action mlspec signs ``(count, head)`` (how many records the log held and the newest one's
hash) and the environment's state serial with the environment's Ed25519 signing key, and stores it outside the
database (:mod:`mlspec.app.audit_trail`). :func:`verify_log` then checks the chain against every checkpoint.

This module is plain data and rules; the caller hands it the public keys it trusts.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from mlspec.hashing import canonical
from mlspec.state.base import verify_chain
from mlspec.state.model import AuditRecord

FORMAT = "mlspec-audit-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """What the audit log held after one audited action, signed by the environment that acted.

    ``count`` and ``head``: the number of records and the newest one's hash; ``serial``: the environment's state
    serial then; ``key``: the signing key's fingerprint (empty, with ``unsigned`` saying why, when no key could
    sign); ``signature``: base64 Ed25519 over :meth:`payload`.
    """

    project: str
    environment: str
    count: int
    head: str
    serial: int
    at: str
    key: str = ""
    key_ref: str = ""
    signature: str = ""
    unsigned: str = ""
    format: str = FORMAT

    def payload(self) -> bytes:
        """The bytes the signature covers: every field but the signature, as canonical JSON."""
        fields = asdict(self)
        del fields["signature"]
        return canonical(fields).encode()

    def signed(self, signature: bytes) -> Checkpoint:
        """This checkpoint with its signature over :meth:`payload` (which names the key, ``key``)."""
        return replace(self, signature=base64.b64encode(signature).decode())

    def label(self) -> str:
        """How messages name it: environment, when, how many records."""
        return f"checkpoint of {self.environment} at {self.at} ({self.count} records)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Checkpoint | None:
        """A checkpoint from its JSON form; None when it is not one (counted as a problem by the caller)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        types = {"count": int, "serial": int}
        if any(type(data.get(name, "")) is not types.get(name, str) for name in cls.__dataclass_fields__):
            return None
        try:
            return cls(**data)
        except TypeError:  # a field it does not have
            return None


# the signature check the caller supplies: (raw public key, signature, data) -> valid
SignatureCheck = Callable[[bytes, bytes, bytes], bool]


@dataclass(frozen=True)
class TrustedKey:
    """The public key an environment's checkpoints must be signed with, or why it cannot be had."""

    fingerprint: str = ""
    public: bytes = b""
    unavailable: str = ""


@dataclass(frozen=True)
class Verification:
    """The audit log checked against its checkpoints: problems (tampering) and warnings (what is not anchored)."""

    count: int
    checkpoints: int
    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def intact(self) -> bool:
        """No problem was found."""
        return not self.problems


def verify_log(
    records: list[AuditRecord],
    checkpoints: list[Checkpoint],
    serials: Mapping[str, int],
    trusted: Mapping[str, TrustedKey],
    check: SignatureCheck,
) -> Verification:
    """Check the chain, then every checkpoint against it: its signature (under ``trusted[environment]``), that the
    log still holds as many records as it counted (else its tail was cut), that the record it ends at has the hash
    it signed (else the chain was rewritten), and that the environment's state serial has not gone back."""
    problems = list(verify_chain(records))
    warnings: list[str] = []
    ordered = sorted(checkpoints, key=lambda c: (c.count, c.at))
    usable = [c for c in ordered if _signature_ok(c, trusted, check, problems, warnings)]
    _check_coverage(records, usable, problems)
    _check_serials(usable, serials, problems)
    covered = max((c.count for c in usable), default=0)
    if records and covered < len(records):
        newest = records[-1].seq
        warnings.append(
            f"records {covered + 1}-{newest} are covered by no checkpoint yet (an action interrupted before it "
            "signed one); the next audited action signs them"
            if covered
            else f"no checkpoint covers this log's {len(records)} record(s): its end could be cut without notice"
        )
    return Verification(len(records), len(checkpoints), tuple(problems), tuple(warnings))


def _signature_ok(
    checkpoint: Checkpoint, trusted: Mapping[str, TrustedKey], check: SignatureCheck, problems: list[str],
    warnings: list[str],
) -> bool:  # fmt: skip
    """Whether the checkpoint counts: signed by its environment's key (a bad signature is a problem; an unsigned
    one, or one whose key cannot be had here, counts with a warning)."""
    if not checkpoint.signature:
        warnings.append(f"{checkpoint.label()} is unsigned ({checkpoint.unsigned or 'no reason given'})")
        return True
    key = trusted.get(checkpoint.environment)
    if key is None or key.unavailable:
        reason = key.unavailable if key else "the environment is not defined any more"
        warnings.append(f"{checkpoint.label()}: its signature cannot be checked here: {reason}")
        return True
    if checkpoint.key != key.fingerprint:
        problems.append(
            f"{checkpoint.label()} is signed by key {checkpoint.key or '(none)'}, not the environment's signing key "
            f"{key.fingerprint}: a forged checkpoint, or the key was replaced"
        )
        return False
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
    except ValueError:
        signature = b""
    if not check(key.public, signature, checkpoint.payload()):
        problems.append(f"{checkpoint.label()} does not verify: its signature does not match its content (edited)")
        return False
    return True


def _check_coverage(records: list[AuditRecord], checkpoints: list[Checkpoint], problems: list[str]) -> None:
    """Every checkpoint's count and head against the log: a cut tail, or a chain rewritten from some record on."""
    by_seq = {r.seq: r for r in records}
    last_good = 0
    for checkpoint in checkpoints:
        if checkpoint.count > len(records):
            problems.append(
                f"the log holds {len(records)} record(s) but the {checkpoint.label()} counted {checkpoint.count}: "
                f"records {len(records) + 1}-{checkpoint.count} were removed from its end (truncated)"
            )
            continue
        held = by_seq.get(checkpoint.count) if checkpoint.count else None
        if checkpoint.count and (held is None or held.hash != checkpoint.head):
            problems.append(
                f"record {checkpoint.count} is not the one the {checkpoint.label()} signed: the chain was rewritten "
                f"after record {last_good} (every record from {last_good + 1} on is suspect)"
            )
            continue
        last_good = max(last_good, checkpoint.count)


def _check_serials(checkpoints: list[Checkpoint], serials: Mapping[str, int], problems: list[str]) -> None:
    """The state of each environment is at least as new as its newest checkpoint says (not emptied, not restored
    from an older copy)."""
    newest: dict[str, Checkpoint] = {}
    for checkpoint in checkpoints:
        if checkpoint.serial >= newest.get(checkpoint.environment, checkpoint).serial:
            newest[checkpoint.environment] = checkpoint
    for environment, checkpoint in sorted(newest.items()):
        serial = serials.get(environment, 0)
        if serial < checkpoint.serial:
            problems.append(
                f"the state of {environment} is at serial {serial}, but the {checkpoint.label()} saw serial "
                f"{checkpoint.serial}: the state was emptied or restored from an older copy"
            )
