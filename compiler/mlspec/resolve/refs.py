"""Cross-resource checks: duplicate names and references that point nowhere.

Every check reports at the referring value's location, names what is missing,
and suggests the closest existing name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mlspec.diagnostics import Diagnostic, format_path
from mlspec.resolve.columns import check_columns
from mlspec.spec.datasource import DataSource, KafkaSource
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment
from mlspec.spec.environment import Environment
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.registry import KIND_OF
from mlspec.spec.suggest import did_you_mean
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec, SpecT, specs_of
from mlspec.spec.waiver import Waiver

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Reference:
    """One spec field that names another resource."""

    source: ParsedSpec
    path: Path
    kind: str
    name: str


class SpecIndex:
    """Specs by kind and name, first definition wins."""

    def __init__(self, specs: Iterable[ParsedSpec]) -> None:
        self.by_kind: dict[str, dict[str, ParsedSpec]] = {}
        self.duplicates: list[tuple[ParsedSpec, ParsedSpec]] = []
        for spec in specs:
            names = self.by_kind.setdefault(spec.kind, {})
            first = names.get(spec.name)
            if first is None:
                names[spec.name] = spec
            else:
                self.duplicates.append((first, spec))
        self.models: dict[str, ParsedSpec[TrainingPipeline]] = {
            p.model.model_name: p for p in specs_of(self.by_kind.get("TrainingPipeline", {}).values(), TrainingPipeline)
        }

    def get(self, kind: str, name: str) -> ParsedSpec | None:
        """The spec of that kind and name, if defined."""
        return self.by_kind.get(kind, {}).get(name)

    def find(self, model: type[SpecT], name: str) -> ParsedSpec[SpecT] | None:
        """The spec of that model's kind and name, typed (``index.find(FeatureView, "txn")``)."""
        found = self.get(KIND_OF[model], name)
        return found.as_kind(model) if found is not None else None

    def names(self, kind: str) -> list[str]:
        """Every defined name of a kind."""
        return list(self.by_kind.get(kind, {}))


def check_references(specs: list[ParsedSpec], invalid: frozenset[tuple[str, str]] = frozenset()) -> list[Diagnostic]:
    """Report duplicate names and dangling references among ``specs``.

    ``invalid`` holds (kind, name) of documents that failed validation: they are
    declared, already reported, and references to them are not reported again.
    """
    index = SpecIndex(specs)
    diagnostics = [_duplicate(first, second) for first, second in index.duplicates]
    for ref in references(specs):
        if (ref.kind, ref.name) in invalid:
            continue
        if ref.kind == "Model":
            if ref.name not in index.models:
                diagnostics.append(_dangling(ref, "registered model", list(index.models), "a TrainingPipeline"))
        elif index.get(ref.kind, ref.name) is None:
            diagnostics.append(_dangling(ref, ref.kind, index.names(ref.kind), f"a {ref.kind}"))
    diagnostics.extend(_field_references(specs, index))
    diagnostics.extend(check_columns(specs, index))
    return diagnostics


def _duplicate(first: ParsedSpec, second: ParsedSpec) -> Diagnostic:
    where = first.document.locate(("metadata", "name"))
    return Diagnostic(
        "duplicate-name",
        f"{second.kind} '{second.name}' is defined twice (first at {where})",
        second.document.locate(("metadata", "name")),
        path="metadata.name",
        hint="names are unique per kind: rename or remove one of them",
        related=(where,),
    )


def _dangling(ref: Reference, what: str, known: list[str], defined_by: str) -> Diagnostic:
    guess = did_you_mean(ref.name, known)
    hint = f"did you mean '{guess}'?" if guess else (f"define {defined_by} named '{ref.name}'")
    return Diagnostic(
        "unknown-reference",
        f"'{format_path(ref.path)}' refers to {what} '{ref.name}', which is not defined",
        ref.source.document.locate(ref.path),
        path=format_path(ref.path),
        hint=hint,
    )


def references(specs: list[ParsedSpec]) -> Iterator[Reference]:
    """Every reference from one spec to another, with where it is written."""
    for spec in specs:
        model = spec.model
        if isinstance(model, DataSource) and isinstance(model.spec, KafkaSource) and model.spec.batch_source:
            yield Reference(spec, ("spec", "batch_source"), "DataSource", model.spec.batch_source)
        elif isinstance(model, FeatureView):
            for i, entity in enumerate(model.spec.entities):
                yield Reference(spec, ("spec", "entities", i), "Entity", entity)
            yield Reference(spec, ("spec", "source"), "DataSource", model.spec.source)
        elif isinstance(model, FeatureService):
            for i, selection in enumerate(model.spec.features):
                yield Reference(spec, ("spec", "features", i, "view"), "FeatureView", selection.view)
        elif isinstance(model, TrainingPipeline):
            yield Reference(spec, ("spec", "features"), "FeatureService", model.spec.features)
            yield Reference(spec, ("spec", "label", "source"), "DataSource", model.spec.label.source)
            if model.spec.entity_source:
                yield Reference(spec, ("spec", "entity_source"), "DataSource", model.spec.entity_source)
        elif isinstance(model, Deployment):
            yield Reference(spec, ("spec", "model", "name"), "Model", model.spec.model.name)
            if model.spec.features:
                yield Reference(spec, ("spec", "features"), "FeatureService", model.spec.features)
            if isinstance(model.spec, BatchDeploymentSpec):
                yield Reference(spec, ("spec", "batch", "entities"), "DataSource", model.spec.batch.entities)
        elif isinstance(model, Environment):
            for i, override in enumerate(model.spec.overrides):
                kind, _, name = override.target.partition("/")
                yield Reference(spec, ("spec", "overrides", i, "target"), kind, name)
            if model.spec.promotion:
                yield Reference(spec, ("spec", "promotion", "from"), "Environment", model.spec.promotion.from_)
        elif isinstance(model, Waiver):
            for i, target in enumerate(model.spec.resources):
                kind, _, name = target.partition("/")
                yield Reference(spec, ("spec", "resources", i), kind, name)
            for i, env in enumerate(model.spec.environments or []):
                yield Reference(spec, ("spec", "environments", i), "Environment", env)


def _field_references(specs: list[ParsedSpec], index: SpecIndex) -> Iterator[Diagnostic]:
    """Fields a FeatureService selects must exist in the view it names."""
    for spec in specs:
        if not isinstance(spec.model, FeatureService):
            continue
        for i, selection in enumerate(spec.model.spec.features):
            view = index.find(FeatureView, selection.view)
            if view is None or selection.fields is None:
                continue
            declared = [f.name for f in view.model.spec.features]
            for j, field in enumerate(selection.fields):
                if field not in declared:
                    path: Path = ("spec", "features", i, "fields", j)
                    guess = did_you_mean(field, declared)
                    yield Diagnostic(
                        "unknown-reference",
                        f"'{format_path(path)}' selects feature '{field}', which FeatureView "
                        f"'{selection.view}' does not declare",
                        spec.document.locate(path),
                        path=format_path(path),
                        hint=f"did you mean '{guess}'?" if guess else f"declared: {', '.join(declared)}",
                    )
