"""Cross-spec column checks: every column a spec reads from a DataSource is in that source's declared schema.

Apply reads these columns from the data (Feast builds views from them, training joins on them, batch scoring
reads entity keys); a name that is not there fails deep inside an engine. A source that declares no schema
is not checked. Every problem is reported at the value that names the column, with the closest declared
column and where the schema is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from mlspec.diagnostics import Diagnostic, format_path
from mlspec.spec.deployment import Deployment
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.suggest import did_you_mean
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.validate import ParsedSpec

Path = tuple[str | int, ...]


class SpecIndex(Protocol):
    """What these checks look specs up with (resolve.refs.SpecIndex)."""

    models: dict[str, ParsedSpec]

    def get(self, kind: str, name: str) -> ParsedSpec | None:
        """The spec of that kind and name, if defined."""


def check_columns(specs: Iterable[ParsedSpec], index: SpecIndex) -> Iterator[Diagnostic]:
    """Columns named by views, pipelines and batch deployments that their sources do not declare."""
    for spec in specs:
        model = spec.model
        if isinstance(model, FeatureView):
            yield from _view_columns(spec, model, index)
        elif isinstance(model, FeatureService):
            yield from _service_names(spec, model, index)
        elif isinstance(model, TrainingPipeline):
            yield from _training_columns(spec, model, index)
        elif isinstance(model, Deployment):
            yield from _batch_columns(spec, model, index)


def _columns(index: SpecIndex, source: str) -> tuple[ParsedSpec, list[str]] | None:
    """The source and its declared columns; None when it is not defined or declares no schema."""
    found = index.get("DataSource", source)
    if found is None:
        return None
    columns: list[str] = found.model.spec.column_names()  # type: ignore[attr-defined]
    return (found, columns) if columns else None


def _missing(
    spec: ParsedSpec, path: Path, what: str, column: str, *, source: ParsedSpec, columns: list[str]
) -> Diagnostic:
    """``what`` names the column's role, like "label field 'is_fraud'"."""
    where = source.document.locate(("spec", "schema"))
    guess = did_you_mean(column, columns)
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    fix = (
        f"did you mean '{guess}'?"
        if guess
        else f"the schema at {where} declares {shown}: fix the name or add '{column}' to the schema"
    )
    return Diagnostic(
        "unknown-reference",
        f"{what} is not a column of DataSource '{source.name}'",
        spec.document.locate(path),
        path=format_path(path),
        hint=fix,
        related=(where,),
    )


def _entity_keys(index: SpecIndex, entities: Iterable[str]) -> dict[str, list[str]]:
    """Join keys of each defined entity."""
    keys: dict[str, list[str]] = {}
    for name in entities:
        entity = index.get("Entity", name)
        if entity is not None:
            keys[name] = list(entity.model.spec.join_keys)  # type: ignore[attr-defined]
    return keys


def _view_columns(spec: ParsedSpec, view: FeatureView, index: SpecIndex) -> Iterator[Diagnostic]:
    declared = _columns(index, view.spec.source)
    if declared is None:
        return
    source, columns = declared
    for i, feature in enumerate(view.spec.features):
        if feature.name not in columns:
            what = f"feature '{feature.name}'"
            yield _missing(spec, ("spec", "features", i, "name"), what, feature.name, source=source, columns=columns)
    keys = _entity_keys(index, view.spec.entities)
    for i, entity in enumerate(view.spec.entities):
        for key in keys.get(entity, []):
            if key not in columns:
                what = f"join key '{key}' of entity '{entity}'"
                yield _missing(spec, ("spec", "entities", i), what, key, source=source, columns=columns)


def _service_names(spec: ParsedSpec, service: FeatureService, index: SpecIndex) -> Iterator[Diagnostic]:
    """The model's inputs are named by feature: two views must not give it the same name."""
    first: dict[str, str] = {}
    for i, selection in enumerate(service.spec.features):
        view = index.get("FeatureView", selection.view)
        if view is None:
            continue
        declared = [f.name for f in view.model.spec.features]  # type: ignore[attr-defined]
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


def _service_keys(index: SpecIndex, service_name: str) -> list[str]:
    """Join keys of every view a feature service selects (what training and scoring join on)."""
    service = index.get("FeatureService", service_name)
    if service is None:
        return []
    entities: list[str] = []
    for selection in service.model.spec.features:  # type: ignore[attr-defined]
        view = index.get("FeatureView", selection.view)
        if view is not None:
            entities.extend(view.model.spec.entities)  # type: ignore[attr-defined]
    keys = _entity_keys(index, entities)
    return sorted({key for entity in entities for key in keys.get(entity, [])})


def _keys_in(
    spec: ParsedSpec, path: Path, source_name: str, service_name: str, *, role: str, index: SpecIndex
) -> Iterator[Diagnostic]:
    """Each join key of the service must be a column of ``source_name``, which gives the rows ``role``."""
    declared = _columns(index, source_name)
    if declared is None:
        return
    source, columns = declared
    for key in _service_keys(index, service_name):
        if key not in columns:
            what = f"join key '{key}' of FeatureService '{service_name}' (the {role} are joined on it)"
            yield _missing(spec, path, what, key, source=source, columns=columns)


def _training_columns(spec: ParsedSpec, pipeline: TrainingPipeline, index: SpecIndex) -> Iterator[Diagnostic]:
    label = pipeline.spec.label
    declared = _columns(index, label.source)
    if declared is not None:
        source, columns = declared
        if label.field not in columns:
            what = f"label field '{label.field}'"
            yield _missing(spec, ("spec", "label", "field"), what, label.field, source=source, columns=columns)
        if label.timestamp_field is not None and label.timestamp_field not in columns:
            path: Path = ("spec", "label", "timestamp_field")
            what = f"label timestamp field '{label.timestamp_field}'"
            yield _missing(spec, path, what, label.timestamp_field, source=source, columns=columns)
    where: Path = ("spec", "entity_source") if pipeline.spec.entity_source else ("spec", "label", "source")
    rows = pipeline.spec.entity_source or label.source
    role = "training rows"
    yield from _keys_in(spec, where, rows, pipeline.spec.features, role=role, index=index)


def _batch_columns(spec: ParsedSpec, deployment: Deployment, index: SpecIndex) -> Iterator[Diagnostic]:
    body: Any = deployment.spec
    batch = getattr(body, "batch", None)
    if batch is None:
        return
    service = getattr(body, "features", None)
    if service is None:
        pipeline = index.models.get(body.model.name)
        if pipeline is None:
            return
        service = pipeline.model.spec.features  # type: ignore[attr-defined]
    role = "rows scored"
    yield from _keys_in(spec, ("spec", "batch", "entities"), batch.entities, service, role=role, index=index)
