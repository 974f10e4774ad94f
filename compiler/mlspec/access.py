"""Access control: who may plan, apply and destroy an environment, and the approval a change needs in git.

The rules are the environment's ``access`` section. They are taken from the commit
last applied to the environment when that commit had rules, so a change cannot
grant itself access or drop its own approval requirement; otherwise from the specs
being applied. Every refusal is written to the audit log (``type: access-denied``)
before it is raised, although nothing is applied. See docs/access.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import AccessDenied
from mlspec.git.runner import Git, GitError

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.identity import Identity
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.spec.access import Access
    from mlspec.state.base import StateStore


@dataclasses.dataclass(frozen=True)
class Rules:
    """The access rules in force for one environment, and the commit they were read from."""

    access: Access | None
    source: str  # "the specs being applied" or "the last applied commit <sha>"


def members(access: Access, principals: Iterable[str]) -> set[str]:
    """The users ``principals`` name, groups expanded, lower-cased."""
    found: set[str] = set()
    for principal in principals:
        found.update(p.lower() for p in access.groups.get(principal, [principal]))
    return found


def who_may(access: Access | None, operation: str) -> list[str] | None:
    """The principals allowed ``operation`` as written (None: everyone). Whoever may apply may also plan."""
    if access is None:
        return None
    if operation == "plan":
        if access.plan is None or access.apply is None:
            return None
        return [*access.plan, *(p for p in access.apply if p not in access.plan)]
    return access.apply


def allowed(access: Access | None, operation: str, actor: str) -> bool:
    """Whether ``actor`` may ``operation`` under ``access``."""
    principals = who_may(access, operation)
    if access is None or principals is None:
        return True
    return actor.lower() in members(access, principals)


def rules_in_force(project: Project, graph: ResolvedGraph, store: StateStore) -> Rules:
    """The last applied commit's access rules when it had some, else those of the specs at hand."""
    current = Rules(graph.env.spec.access, "the specs being applied")
    applied = store.read(graph.name).resources.values()
    if not applied:
        return current
    last = max(applied, key=lambda r: r.applied_at).revision.split(" ", maxsplit=1)[0].removesuffix("+dirty")
    repo = git_root(project)
    if repo is None or last in ("", "unversioned") or last == _output(repo, "rev-parse", "HEAD"):
        return current
    anchored = _access_at(repo, last, project, graph)
    return Rules(anchored, f"the last applied commit {last[:12]}") if anchored is not None else current


def check_allowed(
    project: Project, graph: ResolvedGraph, store: StateStore, *, actor: str, operation: str, revision: str,
    plan_hash: str = "", rules: Rules | None = None,
) -> Rules:  # fmt: skip
    """Refuse (audited) when ``actor`` may not ``operation`` in the environment; returns the rules in force.

    Outside the local tier a restricted operation needs a proven identity (:mod:`mlspec.identity`): the CI's
    verified token, a person's ``mlspec login``, or a HEAD signed by a listed key; ``actor`` as typed (--as,
    MLSPEC_ACTOR, git user) counts on the local tier only. A proven identity acting is recorded with its evidence.
    """
    rules = rules or rules_in_force(project, graph, store)
    if who_may(rules.access, operation) is None:
        return rules  # open to everyone: nothing to prove
    identity = identify(project, rules, actor)
    if graph.env.spec.tier != "local" and not identity.proven:
        _refuse_unproven(store, graph, rules, actor=actor, operation=operation, revision=revision, plan_hash=plan_hash)
    actor = identity.name
    if allowed(rules.access, operation, actor):
        if identity.proven and operation != "plan":
            store.append_audit(graph.name, actor, revision, plan_hash,
                               {"type": "identity", "operation": operation, **identity.record()})  # fmt: skip
        return rules
    principals = who_may(rules.access, operation) or []
    who = ", ".join(_describe(rules.access, p) for p in principals) if principals else "nobody"
    message = f"{actor} may not {operation} '{graph.name}'; who may {operation}: {who}"
    _deny(
        store, graph.name, actor=actor, revision=revision, plan_hash=plan_hash, operation=operation,
        reason="not-allowed", message=message, allowed_principals=principals,
    )  # fmt: skip
    raise AccessDenied(
        message, reason="not-allowed", actor=actor, operation=operation, environment=graph.name,
        allowed=tuple(principals),
        hint=f"identity is --as, MLSPEC_ACTOR, or git user.email; access rules from {rules.source}",
    )  # fmt: skip


def identify(project: Project, rules: Rules, asserted: str) -> Identity:
    """Who acts under ``rules``: proven by the CI's token, a login or a signed HEAD, else ``asserted`` (see
    identity.py);
    AccessDenied when a presented proof does not verify."""
    from mlspec.identity import IdentityError, establish

    try:
        return establish(git_root(project), rules.access, asserted)
    except IdentityError as exc:
        raise AccessDenied(
            f"{exc}", reason="identity-not-verified", actor=asserted, operation="identify", environment="",
            allowed=(), hint="see docs/access.md (proven identities)",
        ) from None  # fmt: skip


def acting(project: Project, graph: ResolvedGraph, store: StateStore, asserted: str) -> str:
    """The name the operation acts under: the proven identity's, when there is one, else ``asserted``."""
    return identify(project, rules_in_force(project, graph, store), asserted).name


def _refuse_unproven(
    store: StateStore, graph: ResolvedGraph, rules: Rules, *, actor: str, operation: str, revision: str,
    plan_hash: str,
) -> None:  # fmt: skip
    access = rules.access
    proofs = []
    if access is not None and access.ci is not None:
        proofs.append(f"a job of {access.ci.repository} on {access.ci.ref} with its OIDC token (access.ci)")
    if access is not None and access.login is not None:
        proofs.append(f"'mlspec login --env {graph.name}' at {access.login.issuer} (access.login)")
    if access is not None and access.signers:
        proofs.append("a HEAD commit signed by a key of access.signers")
    how = " or ".join(proofs) or "none is configured: add access.ci, access.login or access.signers"
    message = (
        f"{actor} is only asserted (--as, MLSPEC_ACTOR or git user.email), which counts on the local tier only; "
        f"to {operation} '{graph.name}' prove who acts: {how}"
    )
    _deny(store, graph.name, actor=actor, revision=revision, plan_hash=plan_hash, operation=operation,
          reason="unproven-identity", message=message, allowed_principals=who_may(access, operation) or [])  # fmt: skip
    raise AccessDenied(
        message, reason="unproven-identity", actor=actor, operation=operation, environment=graph.name,
        allowed=tuple(who_may(access, operation) or ()),
        hint="in GitHub Actions give the job permissions: id-token: write; people sign the commit they apply "
        "(git commit -S) with a key listed in access.signers",
    )  # fmt: skip


def check_approval(
    project: Project, graph: ResolvedGraph, store: StateStore, *, actor: str, revision: str, plan_hash: str,
    rules: Rules | None = None,
) -> None:  # fmt: skip
    """Refuse (audited) a change that lacks the approval in git the environment requires."""
    access = (rules or rules_in_force(project, graph, store)).access
    approval = access.approval if access is not None else None
    if approval is None or not approval.required:
        return
    assert access is not None
    head = revision.split(" ", maxsplit=1)[0]
    commit, dirty = head.removesuffix("+dirty"), head.endswith("+dirty")
    repo = git_root(project)
    if dirty:
        why = "the working tree has uncommitted changes, which no approval covers"
        found: list[str] = []
    elif repo is None or commit == "unversioned":
        why, found = "the project is not in a git repository, so no approval can be recorded", []
    elif approval.method == "signed_commit":
        why, found = _signed_approvals(repo, commit, approval.approvers)
    elif graph.env.spec.tier == "production":  # unsigned merge metadata proves nothing here
        why, found = _protected_job_approval(identify(project, Rules(access, ""), actor), access)
    else:
        why, found = _merge_approval(repo, commit, members(access, approval.approvers))
    if len(found) >= approval.min:  # the decision and its evidence, for the auditor
        store.append_audit(graph.name, actor, revision, plan_hash, {
            "type": "approval", "method": approval.method, "commit": commit, "approved_by": found,
            "required": approval.min,
        })  # fmt: skip
        return
    listed = ", ".join(_describe(access, a) for a in approval.approvers)
    message = (
        f"'{graph.name}' needs {approval.min} approval(s) by {approval.method.replace('_', ' ')} "
        f"from {listed}; {why} (commit {commit[:12]})"
    )
    _deny(
        store, graph.name, actor=actor, revision=revision, plan_hash=plan_hash, operation="apply",
        reason="no-approval", message=message, allowed_principals=approval.approvers,
    )  # fmt: skip
    hint = (
        "sign the commit (git commit -S) or add an empty approval commit signed by an approver "
        "(git commit --allow-empty -S -m 'approve')"
        if approval.method == "signed_commit"
        else "apply the merge commit an approver made of the reviewed change (git merge --no-ff)"
    )
    raise AccessDenied(
        message, reason="no-approval", actor=actor, operation="apply", environment=graph.name,
        allowed=tuple(approval.approvers), hint=hint,
    )  # fmt: skip


def git_root(project: Project) -> Path | None:
    """The git work tree the project lives in (for a rollback, the one its state lives in), or None."""
    for folder in (project.root, project.home):
        with contextlib.suppress(GitError):
            return Git(folder).toplevel()
    return None


def _deny(
    store: StateStore, environment: str, *, actor: str, revision: str, plan_hash: str, operation: str,
    reason: str, message: str, allowed_principals: list[str],
) -> None:  # fmt: skip
    store.append_audit(
        environment, actor, revision, plan_hash,
        {"type": "access-denied", "operation": operation, "reason": reason, "message": message,
         "allowed": list(allowed_principals)},
    )  # fmt: skip


def _describe(access: Access | None, principal: str) -> str:
    if access is not None and principal in access.groups:
        return f"{principal} ({', '.join(access.groups[principal]) or 'empty'})"
    return principal


def _signed_approvals(repo: Path, commit: str, keys: list[str]) -> tuple[str, list[str]]:
    """Approver keys that signed HEAD or an empty commit between it and the change it approves."""
    from mlspec.git.signatures import verify_commit

    log = _output(repo, "log", "--first-parent", "--format=%H %T", "-n", "200", commit).splitlines()
    candidates: list[str] = []
    for i, line in enumerate(log):
        sha, tree = line.split(" ")
        candidates.append(sha)
        if i + 1 >= len(log) or log[i + 1].split(" ")[1] != tree:
            break  # this commit changed the tree: it is the change being approved
    found: list[str] = []
    reasons: list[str] = []
    for sha in candidates:
        check = verify_commit(repo, sha, keys)
        if check.ok and check.fingerprint not in found:
            found.append(check.fingerprint)
        elif not check.ok:
            reasons.append(f"{sha[:12]}: {check.message}")
    why = f"found {len(found)}" + (f" ({'; '.join(reasons)})" if reasons else "")
    return why, found


def _protected_job_approval(identity: Identity, access: Access) -> tuple[str, list[str]]:
    """On production a merge approval counts only as a proven job of the protected CI environment, whose
    required reviewers approved the deployment (the token's ``environment`` claim)."""
    ci = access.ci
    if ci is None or ci.environment is None:
        return ("a merge's author metadata is not proof on production: set access.ci.environment to the protected "
                "CI environment whose reviewers approve, or approve by signed_commit"), []  # fmt: skip
    if identity.method == "ci-oidc" and identity.evidence.get("environment") == ci.environment:
        return "", [f"{ci.principal} in the protected environment {ci.environment}"]
    return (f"on production only a job of the protected CI environment '{ci.environment}' (whose reviewers "
            "approved) counts as the merge's approval; this is not one"), []  # fmt: skip


def _merge_approval(repo: Path, commit: str, approvers: set[str]) -> tuple[str, list[str]]:
    """The approver who merged the change: HEAD merges it (second parent), made by an approver not its author."""
    fields = _output(repo, "log", "-1", "--format=%ae%n%ce%n%P", commit).splitlines()
    if len(fields) < 3 or len(fields[2].split()) < 2:
        return "HEAD is not a merge commit", []
    author, committer, parents = fields[0].lower(), fields[1].lower(), fields[2].split()
    first, change = parents[0], parents[1]
    if Git(repo).succeeds("merge-base", "--is-ancestor", change, first):
        return "the merge brings in nothing new", []
    change_author = _output(repo, "log", "-1", "--format=%ae", change).lower()
    found = sorted({p for p in (author, committer) if p in approvers and p != change_author})
    if found:
        return "", found
    if change_author in approvers and change_author in (author, committer):
        return f"{change_author} merged their own change", []
    return f"merged by {author} (committer {committer}), not an approver", []


def _access_at(repo: Path, commit: str, project: Project, graph: ResolvedGraph) -> Access | None:
    """The environment's access section in its file at ``commit`` (None when absent or unreadable)."""
    from mlspec.load import Limits, load_bytes
    from mlspec.spec import RESOURCE_KINDS
    from mlspec.spec.environment import Environment
    from mlspec.spec.validate import validate_document

    file = Path(graph.environment.document.file)  # as the loader names it: relative to the working folder
    found = [f.resolve() for f in (file, project.root / file) if f.is_file()]
    if not found or not found[0].is_relative_to(repo.resolve()):
        return None
    relative = found[0].relative_to(repo.resolve())
    shown = Git(repo).run_bytes("show", f"{commit}:{relative.as_posix()}")
    if not shown.ok:
        return None
    documents, _ = load_bytes(shown.stdout, str(relative), Limits())
    for document in documents:
        parsed, _ = validate_document(document, RESOURCE_KINDS)
        if parsed is not None and isinstance(parsed.model, Environment) and parsed.name == graph.name:
            return parsed.model.spec.access
    return None


def _output(folder: Path, *args: str) -> str:
    """Git's output in ``folder``, or "" when git fails (the callers read "" as "not known")."""
    result = Git(folder).run(*args)
    return result.stdout.strip() if result.ok else ""
