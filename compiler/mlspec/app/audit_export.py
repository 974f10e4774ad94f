"""``mlspec audit export``: the audit log, its checkpoints and the keys that signed them, checkable without mlspec.

The folder holds ``audit.jsonl`` (every record of the chain, oldest first: an environment's records cannot be
verified apart from the others, since each is chained to whatever came before it), ``checkpoints.jsonl``,
``keys/<environment>.pem`` (the Ed25519 public keys the checkpoints are signed with), ``manifest.json`` (what was
exported, when, and what ``mlspec audit verify`` found) and ``verify.py``, a checker that needs only the Python
standard library and ``cryptography`` (:mod:`mlspec.state.verify_export`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.app.audit_trail import read_trail, trusted_key
from mlspec.errors import UsageError
from mlspec.state.checkpoint import Verification

if TYPE_CHECKING:
    from mlspec.app.project import Project


def export_audit(project: Project, environment: str, out: Path) -> Verification:
    """Write the verified log of the project (``environment``'s checkpoints and key named in the manifest) into
    ``out``; returns what verification found (the files are written either way, the manifest says which)."""
    from mlspec import __version__
    from mlspec.app.audit_trail import verify_audit
    from mlspec.edge.signing import public_pem
    from mlspec.state import verify_export
    from mlspec.state.base import now

    if environment not in project.environments():
        raise UsageError(f"no environment '{environment}' in this project")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty", hint="export into a new folder")
    trail = read_trail(project)
    verification = verify_audit(project, trail)
    records, checkpoints = trail.records, trail.checkpoints
    (out / "keys").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dataclasses.asdict(r), sort_keys=True) for r in records]
    (out / "audit.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    ordered = sorted(checkpoints, key=lambda c: (c.count, c.at))
    (out / "checkpoints.jsonl").write_text(
        "".join(json.dumps(c.to_dict(), sort_keys=True) + "\n" for c in ordered), encoding="utf-8"
    )
    keys = {}
    for name in sorted({c.environment for c in checkpoints} | {environment}):
        key = trail.trusted.get(name) or trusted_key(project, name)
        if key.public:
            (out / "keys" / f"{name}.pem").write_bytes(public_pem(key.public))
            keys[name] = key.fingerprint
    (out / "verify.py").write_text(Path(verify_export.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    manifest = {
        "project": project.name, "environment": environment, "exported_at": now(), "mlspec": __version__,
        "records": len(records), "environment_records": sum(1 for r in records if r.environment == environment),
        "checkpoints": len(ordered), "keys": keys, "intact": verification.intact,
        "problems": list(verification.problems), "warnings": list(verification.warnings),
        "verify": "python verify.py (needs only Python 3 and the cryptography package)",
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return verification
