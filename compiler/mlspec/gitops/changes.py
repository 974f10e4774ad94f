"""What a branch changes: the files changed since a git ref, and the resources they reach.

Example::

    from mlspec import Project
    from mlspec.gitops.changes import affected, changed_files

    project = Project.open(".")
    changes = changed_files(project, "origin/main")
    graph = project.resolve("prod").graph
    print(sorted(affected(graph, changes)))

The changed files are ``git diff --name-only <merge-base(REF, HEAD)>`` (which takes in
staged and unstaged edits) plus untracked files git does not ignore. Each file maps to
resources:

* a spec file: the resources it defines now and those it defined at the merge base
  (removed and renamed resources too, so their deletes show), and for a Waiver the
  resources it exempts, now and then;
* an environment file (any file holding an Environment, now or then): every resource of
  that environment;
* a file under the project's policies folder, or the project file: everything;
* anything else: nothing.

Then everything that depends on those resources, transitively, and the environment's
own resource (it owns the artifacts built from all of them: the Feast repository, the
registry, the Argo CD application, the manifest). Filtering a full run to that set gives
exactly what the full run says about those resources.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from mlspec.errors import UsageError
from mlspec.git.runner import Git, GitError
from mlspec.load.discovery import PROJECT_FILE, YAML_SUFFIXES

if TYPE_CHECKING:
    from mlspec.app.planning import PlanResult
    from mlspec.app.project import Project
    from mlspec.app.validation import CheckResult, ValidationResult
    from mlspec.diagnostics import Location
    from mlspec.resolve.graph import ResolvedGraph

Role = Literal["spec", "environment", "policy", "project", "other"]


@dataclass(frozen=True)
class ChangedFile:
    """One file that differs from the merge base, with what it declared there.

    ``path`` is relative to the project root (POSIX separators). ``before`` holds the
    resources the file named at the merge base: the ones it defined (``Kind/name``),
    and for a Waiver the ones it exempted; empty for new files and files that are not specs.
    """

    path: str
    role: Role
    before: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeSet:
    """The files a branch (and the working tree) changes since its merge base with ``ref``."""

    ref: str
    base: str  # the merge-base commit
    root: Path  # the project root, absolute
    files: tuple[ChangedFile, ...]

    @property
    def everything(self) -> bool:
        """True when a policy or the project file changed: every resource is affected."""
        return any(f.role in ("policy", "project") for f in self.files)

    @property
    def relevant(self) -> bool:
        """True when any changed file is a spec, environment, policy or project file."""
        return any(f.role != "other" for f in self.files)

    @property
    def spec_paths(self) -> frozenset[str]:
        """Project-relative paths of the changed spec and environment files."""
        return frozenset(f.path for f in self.files if f.role in ("spec", "environment"))

    def nothing_line(self, environment: str | None = None) -> str:
        """The line commands print when the branch changes nothing they report on."""
        where = f" in environment {environment}" if environment else ""
        return f"no spec changes since {self.ref}{where} (merge base {self.base[:12]})"

    def scope_line(self, resources: int, environment: str | None = None) -> str:
        """``changed since main (merge base abc): 3 file(s), 5 resource(s) in prod``."""
        where = f" in {environment}" if environment else ""
        relevant = sum(1 for f in self.files if f.role != "other")
        return (
            f"changed since {self.ref} (merge base {self.base[:12]}): "
            f"{relevant} file(s), {resources} resource(s){where}"
        )


def changed_files(project: Project | Path | str, ref: str) -> ChangeSet:
    """The files changed since the merge base of ``ref`` and HEAD, working tree included.

    Raises UsageError (exit 2) outside a git repository, for an unknown ``ref``, or when
    ``ref`` and HEAD share no history.
    """
    from mlspec.app.project import Project

    if not isinstance(project, Project):
        project = Project.open(project)
    root = project.root.resolve()
    try:
        top = Git(root).toplevel()
    except GitError:
        raise UsageError(f"--changed-since needs a git repository; {root} is not in one") from None
    repo = Git(top)
    try:
        repo.rev_parse(ref)
    except GitError:
        raise UsageError(
            f"unknown git ref '{ref}'", hint="name a branch, tag or commit (fetch it first in a shallow CI clone)"
        ) from None
    merge_base = repo.run("merge-base", ref, "HEAD")
    if merge_base.returncode == 1 and not merge_base.stderr.strip():
        raise UsageError(f"'{ref}' and HEAD share no history: there is no merge base to compare with")
    try:
        base = merge_base.check().stdout.strip()
    except GitError as exc:
        raise UsageError(f"no merge base between '{ref}' and HEAD: {exc.message}") from None
    diffed = (
        repo.output_bytes("diff", "--name-only", "--no-renames", "-z", base, "--")
        .decode(errors="surrogateescape")
        .split("\0")
    )
    untracked = (
        repo.output_bytes("ls-files", "--others", "--exclude-standard", "-z")
        .decode(errors="surrogateescape")
        .split("\0")
    )
    names = sorted({n for n in (*diffed, *untracked) if n})
    files: list[ChangedFile] = []
    for name in names:
        absolute = top / name
        if not absolute.is_relative_to(root):
            continue  # outside the project: nothing of it can change a resource
        path = absolute.relative_to(root).as_posix()
        if ".mlspec" in PurePosixPath(path).parts:
            continue  # mlspec's own state, caches and outputs
        role = _role(project, path)
        before: tuple[str, ...] = ()
        if role in ("spec", "environment"):
            before = _declared_at(repo, base, name, path, project)
        files.append(ChangedFile(path, role, before))
    return ChangeSet(ref, base, root, tuple(files))


def _role(project: Project, path: str) -> Role:
    if path == PROJECT_FILE:
        return "project"
    parts = PurePosixPath(path).parts

    def under(folder: str) -> bool:
        prefix = PurePosixPath(os.path.normpath(folder)).parts
        if prefix in ((), (".",)):
            return True
        return parts[: len(prefix)] == prefix

    if under(project.settings.policies):
        return "policy"
    if not path.endswith(YAML_SUFFIXES) or any(p.startswith(".") for p in parts[:-1]):
        return "other"  # discovery skips hidden folders and non-YAML files
    if under(project.settings.environments):
        return "environment"
    if any(under(folder) for folder in project.settings.specs):
        return "spec"
    return "other"


def _declared_at(repo: Git, base: str, name: str, path: str, project: Project) -> tuple[str, ...]:
    """The resources a file named at the merge base (parsed leniently: only kind and name matter)."""
    from mlspec.load.yaml_loader import load_bytes

    shown = repo.run_bytes("cat-file", "blob", f"{base}:{name}")
    if not shown.ok:
        return ()  # the file is new
    data = shown.stdout
    documents, _ = load_bytes(data, path, project.limits)
    refs: list[str] = []
    for document in documents:
        refs.extend(_declared(document.data))
    return tuple(dict.fromkeys(refs))


def _declared(data: object) -> list[str]:
    if not isinstance(data, dict):
        return []
    kind, metadata, spec = data.get("kind"), data.get("metadata"), data.get("spec")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(kind, str) or not isinstance(name, str):
        return []
    refs = [f"{kind}/{name}"]
    if kind == "Waiver" and isinstance(spec, dict) and isinstance(spec.get("resources"), list):
        refs.extend(r for r in spec["resources"] if isinstance(r, str))
    return refs


def _project_path(file: str, root: Path) -> str | None:
    """A spec's document file (as loaded, relative to the working folder) relative to the project root."""
    absolute = Path(file).resolve()
    if not absolute.is_relative_to(root):
        return None
    return absolute.relative_to(root).as_posix()


def affected(graph: ResolvedGraph, changes: ChangeSet) -> frozenset[str]:
    """The refs of ``graph``'s environment whose findings or plan the change set can alter.

    Refs of resources removed since the merge base are included (their deletes are
    part of the plan), so the set may name resources the graph no longer has.
    """
    env_ref = graph.environment.ref
    everything = frozenset((*graph.order, env_ref))
    if changes.everything:
        return everything
    paths = changes.spec_paths
    if not paths:
        return frozenset()
    before = {ref for f in changes.files for ref in f.before}
    if env_ref in before or _project_path(graph.environment.document.file, changes.root) in paths:
        return everything
    seeds = set(before)
    seeds.update(
        ref for ref, spec in graph.resources.items() if _project_path(spec.document.file, changes.root) in paths
    )
    for waiver in graph.waivers:
        if _project_path(waiver.document.file, changes.root) in paths:
            seeds.update(waiver.model.spec.resources)
    seeds.discard(env_ref)
    seeds = {ref for ref in seeds if not ref.startswith(("Environment/", "Waiver/"))}
    if not seeds:
        return frozenset()
    reached = set(seeds)
    for ref in seeds:
        if ref in graph.resources:
            reached.update(graph.dependents(ref))
    reached.add(env_ref)
    return frozenset(reached)


def affected_by_environment(
    project: Project,
    changes: ChangeSet,
    environments: Sequence[str] | None = None,
    validation: ValidationResult | None = None,
) -> dict[str, frozenset[str]]:
    """``affected`` for each environment (default: all of them); environments that do not resolve map to empty."""
    validation = validation or project.validate()
    names = list(environments) if environments else project.environments(validation)
    scope: dict[str, frozenset[str]] = {}
    for name in names:
        resolution = project.resolve(name, validation)
        scope[name] = affected(resolution.graph, changes) if resolution.graph is not None else frozenset()
    return scope


def filter_check(result: CheckResult, scope: Mapping[str, Iterable[str]]) -> CheckResult:
    """The check result reduced to the findings about the resources in ``scope`` (environment -> refs).

    Diagnostics (validation and resolution errors) are kept whole: they stop every
    environment, whichever file they are in.
    """
    keep = {env: frozenset(refs) for env, refs in scope.items()}
    findings = tuple(f for f in result.findings if f.resource in keep.get(f.environment, frozenset()))
    return dataclasses.replace(result, findings=findings)


def filter_plan(result: PlanResult, refs: Iterable[str]) -> PlanResult:
    """The plan reduced to the changes of ``refs`` (same order, same content); findings likewise."""
    keep = frozenset(refs)
    findings = tuple(f for f in result.findings if f.resource in keep)
    if result.plan is None:
        return dataclasses.replace(result, findings=findings)
    changes = tuple(c for c in result.plan.changes if c.ref in keep)
    plan = dataclasses.replace(result.plan, changes=changes, findings=findings)
    return dataclasses.replace(result, plan=plan, findings=findings)


def check_changed(
    project: Project, changes: ChangeSet, environments: Sequence[str] | None = None
) -> tuple[CheckResult, dict[str, frozenset[str]]]:
    """``Project.check`` reduced to what ``changes`` reaches, and the affected refs per environment."""
    validation = project.validate()
    result = project.check(environments, validation=validation)
    if not result.environments:  # validation failed: nothing resolves, the errors are reported whole
        return result, {}
    scope = affected_by_environment(project, changes, result.environments, validation)
    return filter_check(result, scope), scope


@dataclass(frozen=True)
class BranchReport:
    """What a pull-request comment shows: the check and each environment's plan, reduced to a branch's changes.

    Locations are relative to the project root, so the text is the same wherever it runs.
    """

    project: str
    check: CheckResult
    plans: dict[str, PlanResult]
    scope: str = ""  # what the report is limited to, when it is
    nothing_changed: bool = False

    @property
    def ok(self) -> bool:
        """No error, no blocking finding, and every plan made."""
        return self.check.ok and all(r.plan is not None for r in self.plans.values())


def branch_report(
    project: Project, environments: Sequence[str] | None = None, changes: ChangeSet | None = None
) -> BranchReport:
    """Check and plan ``environments`` (default: all), reduced to ``changes`` when given."""
    if changes is not None and not changes.relevant:
        empty = _empty_check()
        return BranchReport(project.name, empty, {}, changes.nothing_line(), nothing_changed=True)
    validation = project.validate()
    # one session per environment: the comment's check and its plans share one policy evaluation
    names = (list(environments or ()) or project.environments(validation)) if validation.ok else []
    sessions = [project.session(name, validation) for name in names]
    try:
        check = project.check_sessions(validation, sessions)
        # no environment was checked when validation failed: its errors are the whole report
        plans = {s.environment: s.plan() for s in sessions}
    finally:
        for session in sessions:
            session.close()
    scope = ""
    if changes is not None and check.environments:
        reach = affected_by_environment(project, changes, check.environments, validation)
        check = filter_check(check, reach)
        plans = {name: filter_plan(result, reach.get(name, frozenset())) for name, result in plans.items()}
        scope = changes.scope_line(sum(len(r) for r in reach.values())) + f" across {len(reach)} environment(s)"
    root = project.root.resolve()
    check = dataclasses.replace(
        check,
        diagnostics=tuple(dataclasses.replace(d, location=_relocated(d.location, root)) for d in check.diagnostics),
        findings=tuple(dataclasses.replace(f, location=_relocated(f.location, root)) for f in check.findings),
    )
    return BranchReport(project.name, check, plans, scope)


def _empty_check() -> CheckResult:
    from mlspec.app.validation import CheckResult

    return CheckResult((), (), (), 0)


def _relocated(location: Location, root: Path) -> Location:
    relative = _project_path(location.file, root)
    return dataclasses.replace(location, file=relative) if relative is not None else location
