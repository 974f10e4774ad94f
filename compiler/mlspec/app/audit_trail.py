"""The audit trail's anchor: a signed checkpoint after every audited action, kept outside the state database.

Where checkpoints are kept, and why:

* **the git branch ``mlspec-audit``** of the platform repository, one commit per checkpoint, each adding a line
  to ``checkpoints.jsonl``. The CI workflow pushes it after every apply; a branch rule on the hosting side (no
  force push, no deletion) makes its history append-only, so whoever can write the state database (a DBA, a
  runner with its credentials) cannot also rewrite the checkpoints, and a rewritten local copy is caught against
  ``origin/mlspec-audit`` once fetched. Git was chosen over the artifact store because every mlspec project has
  its repository, the branch needs no new credentials, and its history is reviewable with plain git.
* **``.mlspec/audit/checkpoints.jsonl``** beside the state, so a project that is not a git repository (or a
  machine that has not fetched the branch) still checks its log; it anchors nothing against this machine's owner.

Each checkpoint is signed with the acting environment's Ed25519 signing key (``encryption.signing_key``, else
``<kms_key>.ed25519`` for a file key, else the project's ``file://.mlspec/keys/audit.ed25519``; a ``kms://`` key
through the signing provider). Where no key can sign, the checkpoint is written unsigned with the reason and
``mlspec audit verify`` says so. Verification is :func:`mlspec.state.checkpoint.verify_log`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.errors import MlspecError
from mlspec.git.runner import Git, GitError
from mlspec.state.base import StateStore
from mlspec.state.checkpoint import Checkpoint, TrustedKey, Verification, verify_log
from mlspec.state.model import AuditRecord

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.spec.environment import Environment

log = logging.getLogger("mlspec.audit")

BRANCH = "refs/heads/mlspec-audit"
REMOTE_BRANCH = "refs/remotes/origin/mlspec-audit"
FILE = "checkpoints.jsonl"
PROJECT_KEY = "file://.mlspec/keys/audit.ed25519"  # for environments that name no key at all
_IDENTITY = {"GIT_AUTHOR_NAME": "mlspec", "GIT_AUTHOR_EMAIL": "mlspec@localhost",
             "GIT_COMMITTER_NAME": "mlspec", "GIT_COMMITTER_EMAIL": "mlspec@localhost"}  # fmt: skip


def checkpoint_file(project: Project) -> Path:
    """The checkpoints' copy beside the state."""
    return project.home / ".mlspec" / "audit" / FILE


def environment_specs(project: Project) -> dict[str, Environment]:
    """Every Environment as its file defines it, by name (only the environments folder is read and validated)."""
    from mlspec.app.validation import validate_files
    from mlspec.spec.environment import Environment

    files, _ = project.spec_files()
    folder = (project.root / project.settings.environments).resolve()
    mine = [f for f in files if folder in f.resolve().parents]
    return {s.name: s.model for s in validate_files(mine, project.limits).specs if isinstance(s.model, Environment)}


def environment_spec(project: Project, name: str) -> Environment | None:
    """The Environment ``name`` as its file defines it (None when the project has none of that name)."""
    return environment_specs(project).get(name)


def signing_ref(environment: Environment | None) -> tuple[str, str]:
    """The key that signs an environment's checkpoints, or ``("", why not)``: the edge packages' signing key
    (``encryption.signing_key``, else ``<kms_key>.ed25519`` for a file key), else the project's own key when the
    environment names no key at all."""
    from mlspec.edge.errors import SigningKeyError
    from mlspec.edge.signing import default_signing_ref

    if environment is None:
        return PROJECT_KEY, ""
    encryption = environment.spec.encryption
    if not (encryption.signing_key or encryption.kms_key):
        return PROJECT_KEY, ""
    try:
        return default_signing_ref(encryption.kms_key, environment.metadata.name, encryption.signing_key), ""
    except SigningKeyError:  # a kms:// key and no signing key: nothing can sign here
        return "", f"its kms_key {encryption.kms_key} names no Ed25519 key: set spec.encryption.signing_key"


def _signer(project: Project, name: str, *, create: bool) -> tuple[Any, str]:
    """The environment's checkpoint signer, or ``(None, why not)``."""
    from mlspec.edge.errors import SigningKeyError
    from mlspec.edge.signing import resolve_signer

    ref, why = signing_ref(environment_spec(project, name))
    if not ref:
        return None, why
    try:
        return resolve_signer(ref, project.root, create=create and ref.startswith("file://")), ""
    except SigningKeyError as exc:
        return None, str(exc)


def trusted_key(project: Project, name: str) -> TrustedKey:
    """The public key ``name``'s checkpoints must verify under."""
    from mlspec.edge.signing import fingerprint

    signer, why = _signer(project, name, create=False)
    if signer is None:
        return TrustedKey(unavailable=why)
    public = signer.public_key()
    return TrustedKey(fingerprint(public), public)


def sign_checkpoint(project: Project, store: StateStore, environment: str) -> Checkpoint:
    """Sign and keep a checkpoint of the log as it is now, for ``environment`` (unsigned, saying why, when its key
    cannot be had). Never raises for the trail's own trouble: the action it anchors is done; it logs instead."""
    from mlspec.edge.signing import fingerprint
    from mlspec.state.base import now

    count, head = store.audit_head()
    serial = store.read(environment).serial
    signer, why = _signer(project, environment, create=True)
    draft = Checkpoint(project.name, environment, count, head, serial, now(),
                       key=fingerprint(signer.public_key()) if signer else "", key_ref=signer.ref if signer else "",
                       unsigned=why)  # fmt: skip
    if signer is not None:
        draft = draft.signed(signer.sign(draft.payload()))
    else:
        log.warning("audit checkpoint of %s is unsigned: %s", environment, why)
    keep(project, draft)
    return draft


def keep(project: Project, checkpoint: Checkpoint) -> None:
    """Append a checkpoint to the file beside the state and, in a git repository, to the ``mlspec-audit`` branch."""
    line = json.dumps(checkpoint.to_dict(), sort_keys=True) + "\n"
    path = checkpoint_file(project)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as exc:
        log.warning("audit checkpoint not written to %s: %s", path, exc)
    git = Git(project.root, env=_IDENTITY, timeout=30)
    try:
        if git.succeeds("rev-parse", "--git-dir"):
            _commit(git, line, f"audit checkpoint: {checkpoint.environment}, {checkpoint.count} records")
    except GitError as exc:
        log.warning("audit checkpoint not committed to %s: %s", BRANCH, exc)


def _commit(git: Git, line: str, message: str) -> None:
    """One commit on the branch adding ``line`` to its file; retried when another process moved the branch."""
    for _ in range(5):
        found = git.run("rev-parse", "--verify", "--quiet", f"{BRANCH}^{{commit}}")
        parent = found.stdout.strip() if found.ok else ""
        entries = git.output("ls-tree", parent).splitlines() if parent else []
        others = [e for e in entries if e.split("\t", 1)[-1] != FILE]  # what else the branch keeps (CI: state.db)
        shown = git.run("cat-file", "blob", f"{parent}:{FILE}") if parent else None
        before = shown.stdout if shown is not None and shown.ok else ""
        if before and not before.endswith("\n"):
            before += "\n"
        blob = git.output("hash-object", "-w", "--stdin", stdin=before + line)
        tree = git.output("mktree", stdin="".join(e + "\n" for e in others) + f"100644 blob {blob}\t{FILE}\n")
        commit = git.output("commit-tree", tree, *(["-p", parent] if parent else []), "-m", message)
        if git.run("update-ref", "-m", message, BRANCH, commit, parent or "0" * 40).ok:
            return
    raise GitError(["git", "update-ref", BRANCH], 1, "the branch kept moving under concurrent checkpoints")


def read_checkpoints(project: Project) -> tuple[list[Checkpoint], list[str]]:
    """Every checkpoint kept (the file, the branch and origin's copy of it, merged), and the lines that are not
    checkpoints any more."""
    sources = [(str(checkpoint_file(project)), _read_text(checkpoint_file(project)))]
    git = Git(project.root, timeout=30)
    try:
        if git.succeeds("rev-parse", "--git-dir"):
            for ref in (BRANCH, REMOTE_BRANCH):
                shown = git.run("show", f"{ref}:{FILE}")
                if shown.ok:
                    sources.append((f"{ref.removeprefix('refs/')}:{FILE}", shown.stdout))
    except GitError as exc:
        log.warning("the %s branch could not be read: %s", BRANCH, exc)
    found: dict[str, Checkpoint] = {}
    broken: list[str] = []
    for where, text in sources:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                checkpoint = Checkpoint.from_dict(json.loads(line))
            except ValueError:
                checkpoint = None
            if checkpoint is None:
                broken.append(f"{where}:{number} is not an audit checkpoint (edited?)")
            else:
                found[json.dumps(checkpoint.to_dict(), sort_keys=True)] = checkpoint
    return list(found.values()), broken


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise MlspecError(f"cannot read the audit checkpoints {path}: {exc}") from None


@dataclass(frozen=True)
class Trail:
    """The audit log, every checkpoint kept for it (and the lines that are not checkpoints any more), the state
    serial of each environment they name, and the key each environment's checkpoints must verify under."""

    records: list[AuditRecord]
    checkpoints: list[Checkpoint]
    broken: list[str]
    serials: dict[str, int]
    trusted: dict[str, TrustedKey]


def read_trail(project: Project) -> Trail:
    """Read the project's audit trail once: the log from the state store, the checkpoints from everywhere kept."""
    checkpoints, broken = read_checkpoints(project)
    names = {c.environment for c in checkpoints}
    with project.state_store() as store:
        records = store.audit()
        serials = {name: store.read(name).serial for name in names}
    return Trail(records, checkpoints, broken, serials, {name: trusted_key(project, name) for name in names})


def verify_audit(project: Project, trail: Trail | None = None) -> Verification:
    """The project's audit log checked against every checkpoint kept for it (``trail``: as already read)."""
    from mlspec.edge.signing import verify_signature

    trail = trail or read_trail(project)
    result = verify_log(trail.records, trail.checkpoints, trail.serials, trail.trusted, verify_signature)
    return Verification(result.count, result.checkpoints, (*trail.broken, *result.problems), result.warnings)


class AnchoredStore(StateStore):
    """A state store that signs a checkpoint for every environment it wrote audit records for, when that
    environment's lock is given back (the end of an apply, a monitor pass, a rollback...) and when it is closed."""

    def __init__(self, project: Project, inner: StateStore) -> None:
        """Anchor ``inner``'s audit records for ``project``."""
        self._project, self._inner = project, inner
        self._touched: set[str] = set()

    def read(self, environment: str) -> Any:
        """The environment's applied state."""
        return self._inner.read(environment)

    def environments(self) -> list[str]:
        """Environments that have state."""
        return self._inner.environments()

    def locks(self) -> Any:
        """Every lock held."""
        return self._inner.locks()

    def audit(self, environment: str | None = None) -> Any:
        """Audit records, oldest first."""
        return self._inner.audit(environment)

    def audit_head(self) -> tuple[int, str]:
        """The newest record's sequence number and hash."""
        return self._inner.audit_head()

    def put(self, environment: str, resource: Any, audit: Any = None) -> None:
        """Record one applied resource (and its audit record)."""
        self._inner.put(environment, resource, audit)
        if audit is not None:
            self._touched.add(environment)

    def delete(self, environment: str, ref: str, audit: Any = None) -> None:
        """Forget one deleted resource (and record it)."""
        self._inner.delete(environment, ref, audit)
        if audit is not None:
            self._touched.add(environment)

    def append_audit(self, environment: str, actor: str, revision: str, plan_hash: str, record: dict[str, Any]) -> Any:
        """Append one record, chained to the last one."""
        entry = self._inner.append_audit(environment, actor, revision, plan_hash, record)
        self._touched.add(environment)
        return entry

    def acquire(
        self, environment: str, holder: str, operation: str, *, wait: float = 0.0, lease: float = 3600.0
    ) -> None:
        """Take the environment's lock."""
        self._inner.acquire(environment, holder, operation, wait=wait, lease=lease)

    def release(self, environment: str) -> None:
        """Sign the environment's checkpoint while still holding its lock, then give the lock back."""
        try:
            self._anchor(environment)
        finally:
            self._inner.release(environment)

    def break_lock(self, environment: str) -> Any:
        """Remove the environment's lock whoever holds it."""
        return self._inner.break_lock(environment)

    def close(self) -> None:
        """Sign what is not signed yet, then close the store."""
        try:
            for environment in sorted(self._touched):
                self._anchor(environment)
        finally:
            self._inner.close()

    def _anchor(self, environment: str) -> None:
        if environment in self._touched:
            self._touched.discard(environment)
            sign_checkpoint(self._project, self._inner, environment)


def durability_warnings(project: Project, environ: dict[str, str] | None = None) -> list[str]:
    """What makes the state or the audit trail easy to lose here: a SQLite state on a CI runner (thrown away
    after the job), checkpoints never pushed to the repository's origin."""
    import os

    env = os.environ if environ is None else environ
    warnings = []
    ci = env.get("GITHUB_ACTIONS") == "true" or env.get("CI", "").lower() in ("true", "1") or "GITLAB_CI" in env
    if ci and project.settings.state.backend == "sqlite":
        state = project.home / project.settings.state.path
        kept = "" if Git(project.root).succeeds("rev-parse", "-q", "--verify", REMOTE_BRANCH) else " and never saved"
        warnings.append(
            f"the state ({state}) lives on this CI runner, which is thrown away after the job{kept}: keep it in "
            "PostgreSQL (state: {backend: postgres, url: env://...}) or on the mlspec-audit branch as the "
            "workflow mlspec init writes does; an Actions cache is evicted"
        )
    git = Git(project.root, timeout=30)
    if git.succeeds("rev-parse", "-q", "--verify", BRANCH) and not git.succeeds(
        "rev-parse", "-q", "--verify", REMOTE_BRANCH
    ):
        warnings.append(
            "the audit checkpoints (branch mlspec-audit) are not on origin: until they are pushed "
            "(git push origin mlspec-audit), whoever can rewrite this machine's state can rewrite them too"
        )
    return warnings
