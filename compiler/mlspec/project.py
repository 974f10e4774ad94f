"""Project: the one entry point of the Python API (load, validate; later check, render, plan, apply).

Example::

    from mlspec import Project

    result = Project.open(".").validate()
    if not result.ok:
        for d in result.diagnostics:
            print(f"{d.location}: {d.code}: {d.message}")

``Project`` is a facade: each stage lives in its own package and takes the
previous stage's value.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec import __version__
from mlspec.diagnostics import Diagnostic, Location, has_errors
from mlspec.errors import ProjectNotFoundError, UsageError
from mlspec.load.discovery import PROJECT_FILE, display_path, find_project_root, yaml_files
from mlspec.load.documents import RawDocument
from mlspec.load.limits import Limits
from mlspec.load.yaml_loader import load_file
from mlspec.resolve.graph import ResolvedGraph, environment_names, resolve_environment
from mlspec.resolve.refs import check_references

if TYPE_CHECKING:
    from mlspec.policy.findings import Finding
    from mlspec.render.cache import RenderCache
    from mlspec.render.engine import RenderResult
from mlspec.spec.environment import Environment
from mlspec.spec.project_file import ProjectFile, ProjectSpec
from mlspec.spec.registry import RESOURCE_KINDS
from mlspec.spec.validate import ParsedSpec, specs_of, validate_document


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """What validation found: the specs that are valid and every problem, sorted."""

    specs: tuple[ParsedSpec, ...]
    diagnostics: tuple[Diagnostic, ...]
    files: int

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not has_errors(self.diagnostics)

    @property
    def error_count(self) -> int:
        """Number of errors."""
        return sum(1 for d in self.diagnostics if d.severity == "error")


@dataclass(frozen=True, slots=True)
class Resolution:
    """Validation plus one environment's resolved graph (None when anything is wrong)."""

    validation: ValidationResult
    graph: ResolvedGraph | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """True when the graph resolved without errors."""
        return self.graph is not None and not has_errors(self.diagnostics)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Validation, resolution and policy results for the environments checked."""

    environments: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]
    findings: tuple[Finding, ...]
    specs: int

    @property
    def ok(self) -> bool:
        """No error and no failed deny (waived findings and warnings pass)."""
        return not has_errors(self.diagnostics) and not any(f.blocking for f in self.findings)


@dataclass(frozen=True)
class Project:
    """A platform repository: its root, its settings and its spec files."""

    root: Path
    settings: ProjectSpec
    name: str
    project_diagnostics: tuple[Diagnostic, ...] = field(default=())
    _caches: dict[str, object] = field(default_factory=dict, repr=False, compare=False)
    state_root: Path | None = None  # where state, caches and outputs live; differs from root only in rollback

    @property
    def home(self) -> Path:
        """The folder state, caches and environment outputs are relative to."""
        return self.state_root or self.root

    @classmethod
    def open(cls, path: str | Path = ".") -> Project:
        """Open the project whose mlspec.yaml is at or above ``path``."""
        start = Path(path)
        if not start.exists():
            raise UsageError(f"path does not exist: {path}")
        root = find_project_root(start)
        if root is None:
            raise ProjectNotFoundError(
                f"no {PROJECT_FILE} found in {display_path(start.resolve())} or any parent directory",
                hint="run 'mlspec init DIR' to create a project, or pass files to validate them on their own",
            )
        return cls._from_root(root)

    @classmethod
    def _from_root(cls, root: Path) -> Project:
        display = display_path(root / PROJECT_FILE)
        documents, diagnostics = load_file(root / PROJECT_FILE, display, Limits())
        settings = ProjectSpec()
        name = root.name
        if documents:
            if len(documents) > 1:
                diagnostics.append(
                    Diagnostic("invalid-value", f"{PROJECT_FILE} must hold one document", documents[1].location)
                )
            parsed, problems = validate_document(documents[0], {"Project": ProjectFile})
            diagnostics.extend(problems)
            if parsed is not None:
                settings = parsed.model.spec
                name = parsed.name
        return cls(root, settings, name, tuple(diagnostics))

    @property
    def limits(self) -> Limits:
        """Loader limits from the project settings."""
        cfg = self.settings.limits
        return Limits(cfg.max_file_bytes, cfg.max_depth, cfg.max_alias_nodes)

    def spec_files(self) -> tuple[list[Path], list[Diagnostic]]:
        """Every YAML file of the project's spec and environment folders."""
        files: list[Path] = []
        problems: list[Diagnostic] = []
        folders = [*self.settings.specs, self.settings.environments]
        for index, folder in enumerate(folders):
            path = self.root / folder
            if not path.exists():
                key: tuple[str | int, ...] = (
                    ("spec", "specs", index) if index < len(self.settings.specs) else ("spec", "environments")
                )
                problems.append(
                    Diagnostic(
                        "missing-directory",
                        f"folder '{folder}' named in {PROJECT_FILE} does not exist",
                        self._project_location(key),
                        hint=f"create it, or fix the path in {PROJECT_FILE}",
                    )
                )
                continue
            files.extend(yaml_files(path))
        return list(dict.fromkeys(files)), problems

    def _project_location(self, path: tuple[str | int, ...]) -> Location:
        documents, _ = load_file(self.root / PROJECT_FILE, display_path(self.root / PROJECT_FILE), Limits())
        if documents:
            return documents[0].locate(path)
        return Location(display_path(self.root / PROJECT_FILE), 1, 1)

    def validate(self) -> ValidationResult:
        """Load and validate every spec of the project, and check references between them."""
        files, problems = self.spec_files()
        result = validate_files(files, self.limits)
        diagnostics = sorted([*self.project_diagnostics, *problems, *result.diagnostics], key=Diagnostic.sort_key)
        return ValidationResult(result.specs, tuple(diagnostics), result.files + 1)

    def environments(self, validation: ValidationResult | None = None) -> list[str]:
        """Names of the environments the project defines."""
        return environment_names((validation or self.validate()).specs)

    def resolve(self, environment: str, validation: ValidationResult | None = None) -> Resolution:
        """Validate, then resolve ``environment``: overrides applied, references checked, graph ordered."""
        validation = validation or self.validate()
        if not validation.ok:
            return Resolution(validation, None, validation.diagnostics)
        graph, problems = resolve_environment(list(validation.specs), environment)
        diagnostics = tuple(sorted([*validation.diagnostics, *problems], key=Diagnostic.sort_key))
        return Resolution(validation, graph, diagnostics)

    def check(
        self,
        environments: Sequence[str] | None = None,
        *,
        today: dt.date | None = None,
        validation: ValidationResult | None = None,
    ) -> CheckResult:
        """Validate, resolve and evaluate every policy for ``environments`` (default: all of them)."""
        from mlspec.policy.evaluate import PolicySet, check_graph, engine_factory

        validation = validation or self.validate()
        if not validation.ok:
            return CheckResult((), validation.diagnostics, (), len(validation.specs))
        names = tuple(environments) if environments else tuple(self.environments(validation))
        policies = PolicySet.for_project(self.root / self.settings.policies)
        diagnostics: list[Diagnostic] = list(validation.diagnostics)
        findings: list[Finding] = []
        for name in names:
            resolution = self.resolve(name, validation)
            if resolution.graph is None:
                diagnostics.extend(d for d in resolution.diagnostics if d not in diagnostics)
                continue
            config = self.settings.policy
            factory = engine_factory(config.engine, config.opa_url, config.timeout_seconds)
            findings.extend(
                check_graph(
                    resolution.graph,
                    self.name,
                    policies,
                    today=today,
                    timeout=config.timeout_seconds,
                    engine_factory=factory,
                )
            )
        return CheckResult(names, tuple(diagnostics), tuple(findings), len(validation.specs))

    def _render_cache(self) -> RenderCache:
        # one cache per Project, so environments rendered together share its memory layer
        from mlspec.render.cache import RenderCache

        cache = self._caches.get("render")
        if not isinstance(cache, RenderCache):
            cache = RenderCache(self.cache_dir / "render")
            self._caches["render"] = cache
        return cache

    @property
    def cache_dir(self) -> Path:
        """Where content-hash caches live (never committed)."""
        return self.home / ".mlspec" / "cache"

    def render(
        self,
        environment: str,
        targets: Sequence[str] | None = None,
        resolution: Resolution | None = None,
        *,
        use_cache: bool = True,
    ) -> tuple[Resolution, RenderResult | None]:
        """Resolve ``environment`` and render its artifacts (all targets, or the named ones)."""
        from mlspec.render.base import RenderContext
        from mlspec.render.engine import render_environment

        resolution = resolution or self.resolve(environment)
        if resolution.graph is None or not resolution.ok:
            return resolution, None
        context = RenderContext(
            project=self.name,
            project_root=self.root,
            mlspec_version=__version__,
            environments=tuple(specs_of(resolution.validation.specs, Environment)),
            cache=self._render_cache() if use_cache else None,
        )
        return resolution, render_environment(resolution.graph, context, targets)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while loading.

    Loading allocates millions of small, acyclic objects that stay alive; the
    collector's repeated full passes over them made validation grow faster than
    linearly (5,000 files: 2.6 s with it, 1.1 s without). Reference counting
    still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def validate_files(files: Sequence[Path], limits: Limits | None = None) -> ValidationResult:
    """Validate a set of YAML files as one whole (references resolved among them)."""
    with _gc_paused():
        result = _validate_files(files, limits or Limits())
    # The specs live as long as the command; keep the collector's later full passes (during
    # resolve, render and plan) from walking them again and again. Reference counting still frees them.
    gc.freeze()
    return result


def _validate_files(files: Sequence[Path], limits: Limits) -> ValidationResult:
    specs: list[ParsedSpec] = []
    diagnostics: list[Diagnostic] = []
    invalid: set[tuple[str, str]] = set()
    for path in files:
        documents, problems = load_file(path, display_path(path), limits)
        diagnostics.extend(problems)
        spec_problems: list[Diagnostic] = []
        specs.extend(_validate_documents(documents, spec_problems, invalid))
        # A value the loader already refused (an unsupported tag, say) is not reported twice.
        seen = {d.location for d in problems}
        diagnostics.extend(d for d in spec_problems if d.location not in seen)
    diagnostics.extend(check_references(specs, frozenset(invalid)))
    diagnostics.sort(key=Diagnostic.sort_key)
    return ValidationResult(tuple(specs), tuple(diagnostics), len(files))


def _validate_documents(
    documents: list[RawDocument], diagnostics: list[Diagnostic], invalid: set[tuple[str, str]]
) -> list[ParsedSpec]:
    parsed_specs: list[ParsedSpec] = []
    for document in documents:
        parsed, problems = validate_document(document, RESOURCE_KINDS)
        diagnostics.extend(problems)
        if parsed is not None:
            parsed_specs.append(parsed)
        else:
            invalid.update(_declared_names(document.data))
    return parsed_specs


def _declared_names(data: object) -> list[tuple[str, str]]:
    """(kind, name) pairs an invalid document still declares, so references to it are not reported twice."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return []
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str):
        return []
    names = [(data["kind"], name)]
    spec = data.get("spec")
    if data["kind"] == "TrainingPipeline":
        model = spec.get("model") if isinstance(spec, dict) else None
        model_name = model.get("name") if isinstance(model, dict) else None
        names.append(("Model", model_name if isinstance(model_name, str) else name))
    return names


def validate_paths(paths: Sequence[str | Path]) -> ValidationResult:
    """Validate files and folders given on their own, outside any project."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"path does not exist: {raw}")
        files.extend(yaml_files(path))
    if not files:
        raise UsageError(f"no YAML files found in: {', '.join(str(p) for p in paths)}")
    unique = list(dict.fromkeys(f.resolve() for f in files))  # overlapping paths name a file once
    return validate_files(unique)
