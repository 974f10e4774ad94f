"""Cross-spec column checks: every column a spec reads from a DataSource is in that source's declared schema.

Apply reads these columns from the data (Feast builds views from them, training joins on them, batch scoring
reads entity keys); a name that is not there fails deep inside an engine. A source that declares no schema
is not checked here (the local platform checks the data file itself before its engines run). Every problem
is reported at the value that names the column, with the closest declared column and where the schema is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlspec.diagnostics import Diagnostic, format_path
from mlspec.spec.datasource import DataSource
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment, OnlineDeploymentSpec
from mlspec.spec.entity import Entity
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.suggest import did_you_mean
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec

if TYPE_CHECKING:  # resolve.refs calls these checks with its index
    from mlspec.resolve.refs import SpecIndex

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ColumnRead:
    """One column a spec reads from a DataSource's data, and where the spec names it."""

    spec: ParsedSpec
    path: Path
    source: str
    column: str
    what: str  # the column's role, like "label field 'is_fraud'"


def column_reads(specs: Iterable[ParsedSpec], index: SpecIndex) -> Iterator[ColumnRead]:
    """Every column read from a source: its event times, view features and keys, labels, rows' join keys."""
    for spec in specs:
        model = spec.model
        if isinstance(model, DataSource):
            body = model.spec
            yield ColumnRead(spec, ("spec", "timestamp_field"), spec.name, body.timestamp_field, "event-time column")
            if body.created_timestamp_field:
                path: Path = ("spec", "created_timestamp_field")
                yield ColumnRead(spec, path, spec.name, body.created_timestamp_field, "created-time column")
        elif isinstance(model, FeatureView):
            yield from _view_reads(spec, model, index)
        elif isinstance(model, TrainingPipeline):
            yield from _training_reads(spec, model, index)
        elif isinstance(model, Deployment):
            yield from _batch_reads(spec, model, index)


def check_columns(specs: Iterable[ParsedSpec], index: SpecIndex) -> Iterator[Diagnostic]:
    """Columns read from sources that do not declare them; a feature name selected from two views."""
    specs = list(specs)
    for read in column_reads(specs, index):
        declared = _columns(index, read.source)
        if declared is None or read.spec.kind == "DataSource":  # a source's own fields: checked by its model
            continue
        source, columns = declared
        if read.column not in columns:
            yield _missing(read, source, columns)
    for spec in specs:
        if isinstance(spec.model, FeatureService):
            yield from _service_names(spec, spec.model, index)
        elif isinstance(spec.model, Deployment):
            yield from _drift_features(spec, spec.model, index)


def _columns(index: SpecIndex, source: str) -> tuple[ParsedSpec, list[str]] | None:
    """The source and its declared columns; None when it is not defined or declares no schema."""
    found = index.find(DataSource, source)
    if found is None:
        return None
    columns = found.model.spec.column_names()
    return (found, columns) if columns else None


def _missing(read: ColumnRead, source: ParsedSpec, columns: list[str]) -> Diagnostic:
    where = source.document.locate(("spec", "schema"))
    guess = did_you_mean(read.column, columns)
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    fix = (
        f"did you mean '{guess}'?"
        if guess
        else f"the schema at {where} declares {shown}: fix the name or add '{read.column}' to the schema"
    )
    return Diagnostic(
        "unknown-reference",
        f"{read.what} is not a column of DataSource '{source.name}'",
        read.spec.document.locate(read.path),
        path=format_path(read.path),
        hint=fix,
        related=(where,),
    )


def _entity_keys(index: SpecIndex, entities: Iterable[str]) -> dict[str, list[str]]:
    """Join keys of each defined entity."""
    keys: dict[str, list[str]] = {}
    for name in entities:
        entity = index.find(Entity, name)
        if entity is not None:
            keys[name] = list(entity.model.spec.join_keys)
    return keys


def _view_reads(spec: ParsedSpec, view: FeatureView, index: SpecIndex) -> Iterator[ColumnRead]:
    source = view.spec.source
    for i, feature in enumerate(view.spec.features):
        yield ColumnRead(spec, ("spec", "features", i, "name"), source, feature.name, f"feature '{feature.name}'")
    keys = _entity_keys(index, view.spec.entities)
    for i, entity in enumerate(view.spec.entities):
        for key in keys.get(entity, []):
            yield ColumnRead(spec, ("spec", "entities", i), source, key, f"join key '{key}' of entity '{entity}'")


def _service_names(spec: ParsedSpec, service: FeatureService, index: SpecIndex) -> Iterator[Diagnostic]:
    """The model's inputs are named by feature: two views must not give it the same name."""
    first: dict[str, str] = {}
    for i, selection in enumerate(service.spec.features):
        view = index.find(FeatureView, selection.view)
        if view is None:
            continue
        declared = [f.name for f in view.model.spec.features]
        for j, name in enumerate(selection.fields if selection.fields is not None else declared):
            if name not in declared:
                continue  # reported by the reference checks
            if name in first and first[name] != selection.view:
                path: Path = ("spec", "features", i, "fields", j) if selection.fields else ("spec", "features", i)
                yield Diagnostic(
                    "duplicate-name",
                    f"feature '{name}' is selected from FeatureView '{first[name]}' and again from "
                    f"'{selection.view}'; a model's input features need distinct names",
                    spec.document.locate(path),
                    path=format_path(path),
                    hint=f"select it from one view only (list the other view's fields without '{name}')",
                )
            first.setdefault(name, selection.view)


def _service_features(index: SpecIndex, service_name: str) -> list[str] | None:
    """The feature names a service gives the model; None when the service or one of its views is unknown."""
    service = index.find(FeatureService, service_name)
    if service is None:
        return None
    names: list[str] = []
    for selection in service.model.spec.features:
        view = index.find(FeatureView, selection.view)
        if view is None:
            return None
        declared = [f.name for f in view.model.spec.features]
        names.extend(selection.fields if selection.fields is not None else declared)
    return names


def _deployment_service(deployment: Deployment, index: SpecIndex) -> str | None:
    """The FeatureService a deployment looks up: its own, else its model's pipeline's."""
    service = deployment.spec.features
    if service is None:
        pipeline = index.models.get(deployment.spec.model.name)
        service = pipeline.model.spec.features if pipeline is not None else None
    return service


def _drift_features(spec: ParsedSpec, deployment: Deployment, index: SpecIndex) -> Iterator[Diagnostic]:
    """Drift monitoring watches input features by name: each must be one the deployment's model gets."""
    online = deployment.spec
    drift = online.monitoring.drift if isinstance(online, OnlineDeploymentSpec) else None
    watched = (drift.features if drift is not None else None) or []
    service = _deployment_service(deployment, index)
    known = _service_features(index, service) if watched and service else None
    if known is None:
        return
    for i, name in enumerate(watched):
        if name not in known:
            path: Path = ("spec", "monitoring", "drift", "features", i)
            guess = did_you_mean(name, known)
            yield Diagnostic(
                "unknown-reference",
                f"drift monitoring watches feature '{name}', which FeatureService '{service}' does not give the model",
                spec.document.locate(path),
                path=format_path(path),
                hint=f"did you mean '{guess}'?" if guess else f"its features: {', '.join(known)}",
            )


def _service_keys(index: SpecIndex, service_name: str) -> list[str]:
    """Join keys of every view a feature service selects (what training and scoring join on)."""
    service = index.find(FeatureService, service_name)
    if service is None:
        return []
    entities: list[str] = []
    for selection in service.model.spec.features:
        view = index.find(FeatureView, selection.view)
        if view is not None:
            entities.extend(view.model.spec.entities)
    keys = _entity_keys(index, entities)
    return sorted({key for entity in entities for key in keys.get(entity, [])})


def _key_reads(
    spec: ParsedSpec, path: Path, source: str, service: str, *, role: str, index: SpecIndex
) -> Iterator[ColumnRead]:
    """The rows ``role`` come from ``source`` and are joined to the service's features on its join keys."""
    for key in _service_keys(index, service):
        what = f"join key '{key}' of FeatureService '{service}' (the {role} are joined on it)"
        yield ColumnRead(spec, path, source, key, what)


def _training_reads(spec: ParsedSpec, pipeline: TrainingPipeline, index: SpecIndex) -> Iterator[ColumnRead]:
    label = pipeline.spec.label
    yield ColumnRead(spec, ("spec", "label", "field"), label.source, label.field, f"label field '{label.field}'")
    if label.timestamp_field is not None:
        what = f"label timestamp field '{label.timestamp_field}'"
        yield ColumnRead(spec, ("spec", "label", "timestamp_field"), label.source, label.timestamp_field, what)
    where: Path = ("spec", "entity_source") if pipeline.spec.entity_source else ("spec", "label", "source")
    rows = pipeline.spec.entity_source or label.source
    yield from _key_reads(spec, where, rows, pipeline.spec.features, role="training rows", index=index)


def _batch_reads(spec: ParsedSpec, deployment: Deployment, index: SpecIndex) -> Iterator[ColumnRead]:
    batch = deployment.spec.batch if isinstance(deployment.spec, BatchDeploymentSpec) else None
    service = _deployment_service(deployment, index)
    if batch is None or service is None:
        return
    path: Path = ("spec", "batch", "entities")
    yield from _key_reads(spec, path, batch.entities, service, role="rows scored", index=index)
