"""The change under review is checked by its base's checks, and changing those checks is itself a finding.

A pull request could otherwise switch its own gate off: point ``policy.opa_url`` at a server that allows
everything (and receives the specs), delete a deny rule from ``policies/``, or add itself to an environment's
``access`` rules or approvers. With a base commit (``--changed-since REF``: the merge base), :func:`baseline`
reads the project file, the policy folder and the environments **as the base has them**; the project then
evaluates with the base's engine settings and policy files (so specs never go to a URL the base does not name),
and every difference in those settings, files, access rules or waiver rules is a ``governance.gate-changed``
deny on the environments it affects. A change to the checks lands on its own: it is a deny unless the change's
head commit carries the OpenPGP signature of an approver the base lists (an environment with
``approval.method: signed_commit``), in which case it is a warning naming the signer.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from mlspec.app.audit_trail import environment_specs
from mlspec.diagnostics import Location
from mlspec.errors import UsageError
from mlspec.git.runner import Git, GitError
from mlspec.policy.findings import Finding

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.policy.evaluate import PolicySet
    from mlspec.resolve.graph import ResolvedGraph
    from mlspec.spec.project_file import PolicyConfig

POLICY = "governance.gate-changed"
HINT = (
    "this change is checked by the base's policies, engine and access rules; a change to the checks lands on its "
    "own, reviewed by the approvers (or with a head commit signed by an approver the base lists), and then governs "
    "the changes after it"
)


@dataclass(frozen=True)
class GateChange:
    """One way the change alters its own checks; ``environment`` None affects every environment."""

    environment: str | None
    message: str
    location: Location
    path: str = ""


@dataclass(frozen=True)
class Baseline:
    """The base commit's checks: its engine settings, its policy files, and what the change alters in them."""

    revision: str
    policy: PolicyConfig
    policy_set: PolicySet
    changes: tuple[GateChange, ...]
    approved_by: str = ""  # the base approver whose key signed the head commit, if any
    holder: Any = None  # keeps the extracted base alive as long as the baseline

    def findings(self, environment: str) -> list[Finding]:
        """The gate-change findings for one environment (a warning when a base approver signed the change)."""
        severity: Literal["deny", "warn"] = "warn" if self.approved_by else "deny"
        signed = f" (approved: the head commit is signed by {self.approved_by})" if self.approved_by else ""
        return [
            Finding(
                POLICY,
                severity,
                change.message + signed,
                f"Environment/{environment}",
                environment,
                change.location,
                change.path,
                HINT,
            )
            for change in self.changes
            if change.environment in (None, environment)
        ]


def pull_request_base(environ: dict[str, str] | None = None) -> str | None:
    """In a GitHub Actions pull-request job, the base branch as fetched (``origin/$GITHUB_BASE_REF``); else None."""
    import os

    env = os.environ if environ is None else environ
    branch = env.get("GITHUB_BASE_REF", "")
    return f"origin/{branch}" if env.get("GITHUB_ACTIONS") == "true" and branch else None


def baseline(project: Project, revision: str) -> Baseline | None:
    """The checks as ``revision`` has them, compared with the project's; None when the base has no project file
    (a new project: nothing to weaken)."""
    from mlspec.policy.evaluate import PolicySet

    holder = tempfile.TemporaryDirectory(prefix="mlspec-base-")
    base = _extract(project, revision, Path(holder.name))
    if base is None:
        holder.cleanup()
        return None
    changes = [*_settings_changes(project, base), *_policy_changes(project, base), *_environment_changes(project, base)]
    approved = _signed_by_base_approver(project, base) if changes else ""
    policy_set = PolicySet.for_project(base.root / base.settings.policies)
    return Baseline(revision, base.settings.policy, policy_set, tuple(changes), approved, holder)


def _extract(project: Project, revision: str, into: Path) -> Project | None:
    """The base as a project under ``into``: its project file (read and validated as any project's), then the
    environments and policy folders it names; None when the base has no project file."""
    try:
        top = Git(project.root).toplevel()
    except GitError:
        raise UsageError(f"{project.root} is not in a git repository: there is no base to check against") from None
    prefix = project.root.resolve().relative_to(top).as_posix()
    git = Git(top)
    try:
        git.rev_parse(revision)
    except GitError:
        raise UsageError(
            f"the base '{revision}' names no commit here, so the change cannot be checked by its base's checks",
            hint="fetch it (actions/checkout with fetch-depth: 0), or name another with --base",
        ) from None

    def archive(*paths: str) -> None:
        at_base = [p if prefix == "." else f"{prefix}/{p}" for p in paths]
        present = [p for p in at_base if git.succeeds("cat-file", "-e", f"{revision}:{p}")]
        if present:
            with tarfile.open(fileobj=io.BytesIO(git.output_bytes("archive", "--format=tar", revision, "--",
                                                                  *present))) as tar:  # fmt: skip
                tar.extractall(into, filter="data")

    archive("mlspec.yaml")
    if not (into / prefix / "mlspec.yaml").is_file():
        return None
    base = type(project).open(into / prefix)
    if base.project_diagnostics:
        raise UsageError(f"the base commit {revision[:12]}'s mlspec.yaml does not validate; fix the base first")
    archive(*(PurePosixPath(f).as_posix() for f in (base.settings.environments, base.settings.policies)))
    return base


def _settings_changes(project: Project, base: Project) -> list[GateChange]:
    head_policy = project.settings.policy.model_dump(mode="json")
    base_policy = base.settings.policy.model_dump(mode="json")
    found = []
    if head_policy != base_policy:
        changed = ", ".join(f"{k}: {base_policy.get(k)!r} -> {v!r}" for k, v in head_policy.items()
                            if base_policy.get(k) != v)  # fmt: skip
        found.append(GateChange(None, f"the change alters the policy engine settings ({changed}); they stay as "
                                      "the base has them", project.project_file_location(("spec", "policy")),
                                "spec.policy"))  # fmt: skip
    if project.settings.policies != base.settings.policies:
        found.append(GateChange(None, f"the change moves the policy folder from {base.settings.policies!r} to "
                                      f"{project.settings.policies!r}; the base's folder stays in force",
                                project.project_file_location(("spec", "policies")), "spec.policies"))  # fmt: skip
    return found


def _rego(folder: Path) -> dict[str, str]:
    """Every policy file of a folder (tests left out: they cannot loosen anything) with its sha256."""
    if not folder.is_dir():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.rego"))
        if not p.name.endswith("_test.rego")
    }


def _policy_changes(project: Project, base: Project) -> list[GateChange]:
    head, before = _rego(project.root / project.settings.policies), _rego(base.root / base.settings.policies)
    found = []
    for name in sorted(set(head) | set(before)):
        if head.get(name) == before.get(name):
            continue
        verb = "adds" if name not in before else "removes" if name not in head else "changes"
        where = project.root / project.settings.policies / name
        shown = Location(str(where.relative_to(project.root)) if name in head else project.settings.policies, 1, 1)
        found.append(GateChange(None, f"the change {verb} the policy file {name}; the base's policies stay in force",
                                shown))  # fmt: skip
    return found


def _environment_changes(project: Project, base: Project) -> list[GateChange]:
    """Access rules, approvers and waiver rules of each environment the base has, as the change alters them."""
    head, before = environment_specs(project), environment_specs(base)
    found = []
    for name, old in sorted(before.items()):
        new = head.get(name)
        for section in ("access", "waivers"):
            was = _dump(getattr(old.spec, section, None))
            now = _dump(getattr(new.spec, section, None)) if new is not None else None
            if was != now:
                what = "access rules and approvers" if section == "access" else "waiver rules"
                found.append(GateChange(name, f"the change alters environment '{name}''s {what}; the base's stay "
                                              "in force for this change", _environment_location(project, name, section),
                                        f"spec.{section}"))  # fmt: skip
    return found


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json") if model is not None else None


def _environment_location(project: Project, name: str, section: str) -> Location:
    from mlspec.spec.environment import Environment

    for spec in project.validate().specs:
        if isinstance(spec.model, Environment) and spec.name == name:
            return spec.document.locate(("spec", section))
    return Location(project.settings.environments, 1, 1)


def _signed_by_base_approver(project: Project, base: Project) -> str:
    """The base approver (an OpenPGP fingerprint of a signed_commit approval) whose key signed HEAD, or ""."""
    from mlspec.git.signatures import verify_commit

    keys = sorted({
        approver
        for env in environment_specs(base).values()
        if env.spec.access is not None and env.spec.access.approval is not None
        and env.spec.access.approval.method == "signed_commit"
        for approver in env.spec.access.approval.approvers
    })  # fmt: skip
    if not keys:
        return ""
    check = verify_commit(project.root, "HEAD", keys)
    return check.fingerprint if check.ok else ""


def waiver_approvals(project: Project, graph: ResolvedGraph) -> dict[str, str]:
    """For each waiver of a non-local environment whose ``approved_by`` is one of its approvers: that approver, when
    the commit that last changed the waiver's (committed, unedited) file is signed by their key."""
    import os

    from mlspec.git.signatures import verify_commit
    from mlspec.policy.waivers import approvers

    if graph.env.spec.tier == "local" or not graph.waivers:
        return {}
    allowed = {a.upper() for a in approvers(graph.env)}
    git = Git(project.root)
    if not allowed or not git.succeeds("rev-parse", "--git-dir"):
        return {}
    found = {}
    for waiver in graph.waivers:
        wanted = waiver.model.spec.approved_by
        if wanted.upper() not in allowed:
            continue
        path = os.path.abspath(waiver.document.file)
        if not git.succeeds("ls-files", "--error-unmatch", "--", path) or not git.succeeds(
            "diff", "--quiet", "HEAD", "--", path
        ):
            continue  # not committed, or edited since: nobody signed what is there
        commit = git.output("log", "-1", "--format=%H", "--", path)
        if commit and verify_commit(project.root, commit, [wanted]).ok:
            found[waiver.ref] = wanted
    return found
