"""Spec fields no target honours: refused at render with ``unsupported-by-target``, on every target.

This is the one list of them. :func:`refusals` runs for every environment that is
rendered (local and cluster alike, before any renderer), and the Feast renderer
takes its source-type messages from :data:`REFUSED_SOURCE_TYPES`. A spec field is
either read by the code that realises it or named here: tests/unit/test_silent_fields.py
fails on a field that is neither. Fields whose real behaviour a later issue builds
say so in their message, so users know the refusal is temporary.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from mlspec.diagnostics import Diagnostic, format_path
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.datasource import FileSource, KafkaSource, ObjectStoreSource, PostgresSource
from mlspec.spec.deployment import AbRollout, BlueGreenRollout, Drift, ShadowRollout
from mlspec.spec.training import TrainingPipelineSpec
from mlspec.spec.validate import ParsedSpec

CODE = "unsupported-by-target"
SOURCE_TYPES = (FileSource, ObjectStoreSource, PostgresSource, KafkaSource)


@dataclass(frozen=True)
class RefusedField:
    """A spec field that no target honours, when it holds a value ``refused`` says is not honoured.

    ``problem`` and ``fix`` are format strings with ``{name}`` (the resource), ``{value}`` (the field's value)
    and ``{field}`` (the field's name in YAML); ``until`` names the later work that builds the field, if any.
    With ``written``, only a value the spec writes is refused (the default stands for "not asked for").
    """

    owners: tuple[type[BaseModel], ...]
    field: str
    problem: str
    fix: str
    refused: Callable[[Any], bool] = bool
    until: str = ""
    written: bool = False

    def applies(self, model: BaseModel, name: str, value: Any) -> bool:
        """Whether ``model``'s field ``name`` holding ``value`` is refused."""
        if name != self.field or not isinstance(model, self.owners):
            return False
        if self.written and name not in model.model_fields_set:
            return False
        return self.refused(value)

    def message(self, spec: ParsedSpec, value: Any, yaml_name: str) -> str:
        """What is wrong, for a diagnostic."""
        text = self.problem.format(name=spec.name, value=_show(value), field=yaml_name)
        if self.until:
            text += f"; it is refused until {self.until}"
        return text


@dataclass(frozen=True)
class RefusedSourceType:
    """A DataSource type no target reads; ``fields`` are its own fields, which are refused with it."""

    fields: tuple[str, ...]
    problem: str
    fix: str


REFUSED_FIELDS: tuple[RefusedField, ...] = (
    RefusedField(
        SOURCE_TYPES,
        "retention",
        "DataSource '{name}' sets retention: {value}, but no target deletes old data yet",
        "remove retention; keep the retention rule where it is enforced today (the store's lifecycle policy)",
        refused=lambda value: value is not None,
        until="a later issue builds data retention",
    ),
    RefusedField(
        (ObjectStoreSource,),
        "credentials",
        "object_store source '{name}' sets credentials: {value}, but no target passes per-source credentials: Feast's "
        "offline store and the pipeline steps read object stores with the identity of the process that runs them",
        "remove credentials and give the identity that runs the pipelines (workload identity, or the AWS_*/AZURE_* "
        "variables of the runner) read access to the source's uri",
        refused=lambda value: value is not None,
    ),
    RefusedField(
        (TrainingPipelineSpec,),
        "retrain_on",
        "TrainingPipeline '{name}' sets retrain_on: {value}, but no target starts training from a trigger yet",
        "remove retrain_on (or keep [manual]); to retrain on drift set monitoring.drift.action: retrain on the "
        "Deployment that serves the model; for training on a timetable set this pipeline's schedule "
        "(recurring runs on Kubeflow targets)",
        refused=lambda value: any(trigger != "manual" for trigger in value),
        until="a later issue builds retraining triggers",
    ),
    RefusedField(
        (Drift,),
        "action",
        "Deployment '{name}' has drift action '{value}', but mlspec "
        "sends no alerts yet: drift would only be printed by `mlspec monitor`",
        "set monitoring.drift.action: none to report drift in `mlspec monitor` (it exits 1 on drift), "
        "or action: retrain to retrain and roll out again",
        refused=lambda value: value == "alert",
        until="a later issue builds alerting",
    ),
    RefusedField(
        (BlueGreenRollout,),
        "auto_promote",
        "Deployment '{name}' has a blue_green rollout with auto_promote: {value}, but "
        "every target switches all traffic to green by itself once green loaded and passed a smoke inference; "
        "holding green for a manual promotion is not built",
        "set rollout.auto_promote: true, which is what every target does, or use strategy: canary for a judged, "
        "stepwise rollout",
        refused=lambda value: value is False,
    ),
    RefusedField(
        (AbRollout, ShadowRollout, BlueGreenRollout),
        "analysis",
        "Deployment '{name}' sets rollout.analysis, but only canary rollouts judge a challenger against analysis "
        "thresholds: A/B arms keep their weights, shadow only compares outputs and blue_green switches after a "
        "smoke inference",
        "remove analysis, or use strategy: canary to promote only a challenger that holds the thresholds",
        refused=lambda value: True,
        written=True,
    ),
)

REFUSED_SOURCE_TYPES: dict[type[BaseModel], RefusedSourceType] = {
    PostgresSource: RefusedSourceType(
        ("connection", "table", "query"),
        "no target reads postgres sources yet: the Feast renderer and the pipeline steps read file and "
        "object-store sources, so '{name}' (its connection, table and query) would go unused",
        "export the table or query to parquet (a file or object_store source) for the offline store",
    ),
    KafkaSource: RefusedSourceType(
        ("bootstrap_servers", "topic", "credentials", "batch_source"),
        "no target reads kafka sources yet: nothing consumes a topic into the online store and the pipeline "
        "steps read file and object-store sources, so '{name}' (its bootstrap_servers, topic and credentials) "
        "would go unused",
        "declare the topic's history as a file or object_store source and build features from that",
    ),
}


def refused_source_type(spec: ParsedSpec, source: BaseModel) -> Diagnostic | None:
    """The ``unsupported-by-target`` diagnostic for a DataSource of a type no target reads, else None."""
    refusal = REFUSED_SOURCE_TYPES.get(type(source))
    if refusal is None:
        return None
    return Diagnostic(
        CODE,
        refusal.problem.format(name=spec.name),
        spec.document.locate(("spec", "type")),
        path="spec.type",
        hint=refusal.fix,
    )


def refusals(graph: ResolvedGraph) -> list[Diagnostic]:
    """An ``unsupported-by-target`` diagnostic for every refused field that a resource of ``graph`` sets."""
    found: list[Diagnostic] = []
    for spec in graph.resources.values():
        for refusal, path, value in _refused_in(spec.model, ()):
            found.append(
                Diagnostic(
                    CODE,
                    refusal.message(spec, value, str(path[-1])),
                    spec.document.locate(path),
                    path=format_path(path),
                    hint=refusal.fix.format(name=spec.name, value=_show(value), field=path[-1]),
                )
            )
    return found


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models a field's annotation can hold: through Optional, unions, Annotated, lists and dicts."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if typing.get_origin(annotation) is Literal:
        return
    for argument in typing.get_args(annotation):
        yield from models_in(argument)


# Per model class, the fields worth a look: (attribute, YAML name, refusals of that field, may hold refused fields).
_Plan = tuple[tuple[str, str, tuple[RefusedField, ...], bool], ...]


@functools.cache
def _plan(cls: type[BaseModel]) -> _Plan:
    plan = []
    for name, info in cls.model_fields.items():
        checks = tuple(r for r in REFUSED_FIELDS if r.field == name and issubclass(cls, r.owners))
        descend = any(_plan(inner) for inner in models_in(info.annotation))
        if checks or descend:
            plan.append((name, info.alias or name, checks, descend))
    return tuple(plan)


def _refused_in(
    model: BaseModel, path: tuple[str | int, ...]
) -> Iterator[tuple[RefusedField, tuple[str | int, ...], Any]]:
    """The refused fields ``model`` and the models inside it set: (refusal, YAML path, value)."""
    for name, yaml_name, checks, descend in _plan(type(model)):
        value = getattr(model, name)
        here = (*path, yaml_name)
        for refusal in checks:
            if refusal.applies(model, name, value):
                yield refusal, here, value
        if descend:
            yield from _nested(value, here)


def _nested(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[RefusedField, tuple[str | int, ...], Any]]:
    if isinstance(value, BaseModel):
        yield from _refused_in(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nested(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested(item, (*path, str(key)))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
