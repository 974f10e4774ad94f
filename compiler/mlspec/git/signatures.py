"""Commit signatures: does a commit carry an OpenPGP signature that verifies against a trusted key?

Verification is git's own (``git verify-commit --raw``, which runs gpg); the verdict is
read from gpg's machine-readable status lines, never from its exit code or its trust
database: a key is trusted when its fingerprint (primary key or signing subkey) is in
the environment's ``reconcile.trusted_keys``. The public keys must be in the keyring
of the reconciler (``GNUPGHOME`` or ``gnupg_home``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlspec.git.runner import Git

Verdict = Literal["trusted", "unsigned", "untrusted", "bad"]


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one commit's signature, with who signed it (when known) and why (``message``)."""

    commit: str
    verdict: Verdict
    message: str
    fingerprint: str = ""  # the primary key's fingerprint (or the signing key's when gpg gives no primary)
    signer: str = ""  # the key's user id, as gpg reports it

    @property
    def ok(self) -> bool:
        """Signed, the signature verifies, and the key is trusted."""
        return self.verdict == "trusted"


def verify_commit(
    repo: Path, commit: str, trusted_keys: Sequence[str], *, gnupg_home: Path | None = None
) -> SignatureCheck:
    """Check ``commit``'s signature against ``trusted_keys`` (40-hex fingerprints, any case)."""
    git = Git(repo, env={"GNUPGHOME": str(gnupg_home)} if gnupg_home is not None else None)
    raw = git.run("cat-file", "commit", commit)
    if not raw.ok:
        return SignatureCheck(commit, "bad", f"the commit cannot be read: {raw.stderr.strip()}")
    signature = _signature_header(raw.stdout)
    if signature is None:
        return SignatureCheck(commit, "unsigned", "not signed")
    if not signature.startswith("-----BEGIN PGP SIGNATURE-----"):
        return SignatureCheck(commit, "untrusted", "signed, but not with OpenPGP (gpg)")
    proc = git.run("-c", "gpg.format=openpgp", "-c", "gpg.minTrustLevel=undefined", "verify-commit", "--raw", commit)
    status = _status_lines(proc.stderr)
    if "BADSIG" in status:
        return SignatureCheck(commit, "bad", "the signature does not verify (BADSIG)")
    refusals = (("EXPKEYSIG", "an expired key"), ("REVKEYSIG", "a revoked key"), ("EXPSIG", "an expired signature"))
    for word, why in refusals:
        if word in status:
            return SignatureCheck(commit, "untrusted", f"signed with {why}")
    if "NO_PUBKEY" in status or "ERRSIG" in status:
        keyid = (status.get("NO_PUBKEY") or status.get("ERRSIG") or [""])[0]
        return SignatureCheck(commit, "untrusted", f"signed by key {keyid}, which is not in the reconciler's keyring")
    if "GOODSIG" not in status or "VALIDSIG" not in status:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no verdict from gpg"]
        return SignatureCheck(commit, "bad", f"the signature could not be verified ({detail[0]})")
    valid = status["VALIDSIG"]
    signing = valid[0].upper()
    primary = valid[9].upper() if len(valid) > 9 else signing
    signer = " ".join(status["GOODSIG"][1:])
    wanted = {k.upper() for k in trusted_keys}
    if signing in wanted or primary in wanted:
        return SignatureCheck(commit, "trusted", f"signed by {primary} ({signer})", primary, signer)
    return SignatureCheck(
        commit,
        "untrusted",
        f"signed by {primary} ({signer}), which is not a trusted key",
        primary,
        signer,
    )


def _signature_header(raw: str) -> str | None:
    """The ``gpgsig`` (or ``gpgsig-sha256``) header of a raw commit object, continuation lines joined."""
    headers, _, _ = raw.partition("\n\n")
    lines: list[str] | None = None
    for line in headers.splitlines():
        if lines is not None:
            if line.startswith(" "):
                lines.append(line[1:])
                continue
            break
        if line.startswith(("gpgsig ", "gpgsig-sha256 ")):
            lines = [line.split(" ", 1)[1]]
    return "\n".join(lines) if lines is not None else None


def _status_lines(text: str) -> dict[str, list[str]]:
    """gpg's ``[GNUPG:] KEYWORD args...`` lines: keyword -> its arguments (the first occurrence)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("[GNUPG:] "):
            keyword, *args = line[len("[GNUPG:] ") :].split()
            found.setdefault(keyword, args)
    return found
