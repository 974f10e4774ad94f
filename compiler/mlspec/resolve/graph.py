"""Resolution per environment: overrides applied, references checked, a dependency graph in order.

Example::

    graph, problems = resolve_environment(specs, "prod")
    for ref in graph.order:        # dependencies before dependants
        print(ref, graph.dependencies[ref])
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlspec.diagnostics import Diagnostic
from mlspec.hashing import digest
from mlspec.resolve.overlay import Patch, apply_patches, check_patch
from mlspec.resolve.refs import SpecIndex, check_references, references
from mlspec.spec.environment import Environment
from mlspec.spec.registry import KIND_OF
from mlspec.spec.suggest import did_you_mean
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec, SpecT, specs_of
from mlspec.spec.waiver import Waiver

# Kinds that become platform resources; Environments and Waivers shape them but are not deployed.
GRAPH_KINDS = ("DataSource", "Entity", "FeatureView", "FeatureService", "TrainingPipeline", "Deployment")


@dataclass(frozen=True)
class ResolvedGraph:
    """Every resource of one environment, patched and ordered so that dependencies come first."""

    environment: ParsedSpec[Environment]
    resources: dict[str, ParsedSpec]
    dependencies: dict[str, tuple[str, ...]]
    order: tuple[str, ...]
    overridden: frozenset[str] = field(default=frozenset())
    waivers: tuple[ParsedSpec[Waiver], ...] = ()
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _reverse: dict[str, set[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The environment's name."""
        return self.environment.name

    @property
    def env(self) -> Environment:
        """The environment's model."""
        return self.environment.model

    def of_kind(self, kind: str) -> list[ParsedSpec]:
        """Resources of one kind, in dependency order."""
        return [self.resources[ref] for ref in self.order if self.resources[ref].kind == kind]

    def specs(self, model: type[SpecT]) -> list[ParsedSpec[SpecT]]:
        """Resources of one model's kind, typed, in dependency order (``graph.specs(Deployment)``)."""
        return specs_of((self.resources[ref] for ref in self.order), model)

    def find(self, model: type[SpecT], name: str) -> ParsedSpec[SpecT] | None:
        """The resource of that model's kind and name, typed, if the environment has it."""
        return self.typed(model, f"{KIND_OF[model]}/{name}")

    def require(self, model: type[SpecT], name: str) -> ParsedSpec[SpecT]:
        """The resource of that model's kind and name, typed; KeyError when the environment lacks it."""
        found = self.find(model, name)
        if found is None:
            raise KeyError(f"{KIND_OF[model]}/{name}")
        return found

    def typed(self, model: type[SpecT], ref: str) -> ParsedSpec[SpecT] | None:
        """The resource at ``ref`` (``Kind/name``) when it is a ``model``, typed."""
        found = self.resources.get(ref)
        return found.as_kind(model) if found is not None else None

    def fingerprint(self, ref: str) -> str:
        """A hash of the resource's spec and, transitively, of everything it depends on.

        Equal fingerprints mean equal inputs, so a renderer may reuse what it made before.
        """
        cache = self._fingerprints
        found = cache.get(ref)
        if found is None:
            found = digest(self.resources[ref].digest, *(self.fingerprint(dep) for dep in self.dependencies[ref]))
            cache[ref] = found
        return found

    def upstream(self, ref: str) -> set[str]:
        """Every resource ``ref`` depends on, directly or through others."""
        seen: set[str] = set()
        stack = list(self.dependencies.get(ref, ()))
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(self.dependencies.get(dep, ()))
        return seen

    def dependents(self, ref: str) -> set[str]:
        """Every resource that depends on ``ref``, directly or through others."""
        reverse = self._reverse
        if not reverse:
            for node, deps in self.dependencies.items():
                for dep in deps:
                    reverse.setdefault(dep, set()).add(node)
        seen: set[str] = set()
        stack = [ref]
        while stack:
            for child in reverse.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen


def environment_names(specs: Iterable[ParsedSpec]) -> list[str]:
    """Names of the environments defined, sorted."""
    return sorted(s.name for s in specs if s.kind == "Environment")


def resolve_environment(specs: list[ParsedSpec], env_name: str) -> tuple[ResolvedGraph | None, list[Diagnostic]]:
    """Resolve the validated ``specs`` for one environment."""
    index = SpecIndex(specs)
    environment = index.find(Environment, env_name)
    if environment is None:
        names = index.names("Environment")
        guess = did_you_mean(env_name, names)
        from mlspec.errors import UsageError

        raise UsageError(
            f"no environment named '{env_name}'",
            hint=f"did you mean '{guess}'?" if guess else f"environments: {', '.join(sorted(names)) or 'none'}",
        )
    model = environment.model
    problems: list[Diagnostic] = []
    patches: dict[str, list[Patch]] = {}
    for i, override in enumerate(model.spec.overrides):
        patch = Patch(environment.document, ("spec", "overrides", i, "patch"))
        problems.extend(check_patch(patch))
        kind = override.target.split("/", 1)[0]
        if kind not in GRAPH_KINDS:
            problems.append(
                Diagnostic(
                    "invalid-override",
                    f"overrides patch platform resources; {kind} cannot be overridden",
                    environment.document.locate(("spec", "overrides", i, "target")),
                    path=f"spec.overrides[{i}].target",
                    hint=f"one of: {', '.join(GRAPH_KINDS)}; edit the {kind} itself instead",
                )
            )
        patches.setdefault(override.target, []).append(patch)
    if problems:
        return None, problems

    resources: dict[str, ParsedSpec] = {}
    invalid: set[tuple[str, str]] = set()  # reported already; references to them are not reported again
    for spec in specs:
        if spec.kind not in GRAPH_KINDS:
            continue
        patched: ParsedSpec | None = spec
        if spec.ref in patches:
            patched, errors = apply_patches(spec, patches[spec.ref])
            problems.extend(errors)
        if patched is None:
            invalid.add((spec.kind, spec.name))
            if isinstance(spec.model, TrainingPipeline):
                invalid.add(("Model", spec.model.model_name))
        else:
            resources.setdefault(patched.ref, patched)
    if patches:  # validation checked the unpatched references; only a patch can break one
        environments = [s for s in specs if s.kind == "Environment"]
        problems.extend(check_references([*resources.values(), *environments], frozenset(invalid)))
    if problems:
        return None, problems

    dependencies = _dependencies(list(resources.values()), SpecIndex(resources.values()))
    order, cycle_problems = _order(dependencies, resources)
    if cycle_problems:
        return None, cycle_problems
    waivers = tuple(
        s for s in specs_of(specs, Waiver) if s.model.spec.environments is None or env_name in s.model.spec.environments
    )
    graph = ResolvedGraph(environment, resources, dependencies, order, frozenset(patches), waivers)
    return graph, []


def _dependencies(specs: list[ParsedSpec], index: SpecIndex) -> dict[str, tuple[str, ...]]:
    deps: dict[str, list[str]] = {spec.ref: [] for spec in specs}
    for ref in references(specs):
        if ref.kind == "Model":
            target = index.models.get(ref.name)
            target_ref = target.ref if target else None
        else:
            target_ref = f"{ref.kind}/{ref.name}"
        if target_ref in deps and target_ref not in deps[ref.source.ref]:
            deps[ref.source.ref].append(target_ref)
    return {node: tuple(sorted(d)) for node, d in deps.items()}


def _order(
    dependencies: dict[str, tuple[str, ...]], resources: dict[str, ParsedSpec]
) -> tuple[tuple[str, ...], list[Diagnostic]]:
    sorter = graphlib.TopologicalSorter(dict(sorted(dependencies.items())))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = exc.args[1]
        first, second = resources[cycle[0]], resources[cycle[1]]
        chain = " -> ".join(cycle)
        return (), [
            Diagnostic(
                "dependency-cycle",
                f"resources depend on each other in a cycle: {chain}",
                first.document.location,
                hint="break the cycle: one of these references must go",
                related=(second.document.location,),
            )
        ]
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())  # sorted: the same order on every run
        order.extend(ready)
        sorter.done(*ready)
    return tuple(order), []
