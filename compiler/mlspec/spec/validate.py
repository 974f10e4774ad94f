"""Validate one loaded document against its kind's model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic

from pydantic import ValidationError
from typing_extensions import TypeIs, TypeVar

from mlspec.diagnostics import Diagnostic
from mlspec.load.documents import SourceDocument
from mlspec.spec.base import API_VERSION, Metadata, StrictModel
from mlspec.spec.errors import describe_input, translate
from mlspec.spec.suggest import did_you_mean

M_co = TypeVar("M_co", bound=StrictModel, default=StrictModel, covariant=True)
"""The model of a parsed spec; a bare ``ParsedSpec`` holds any kind."""
SpecT = TypeVar("SpecT", bound=StrictModel)


@dataclass(frozen=True, slots=True)
class ParsedSpec(Generic[M_co]):
    """A validated resource with the document it came from (for locations).

    ``ParsedSpec[Deployment]`` is a spec whose ``model`` is a Deployment; narrow a
    bare one with :func:`is_spec_of`, :meth:`as_kind` or :func:`specs_of`.
    """

    kind: str
    name: str
    model: M_co
    document: SourceDocument

    @property
    def ref(self) -> str:
        """``Kind/name``, the way specs refer to resources."""
        return f"{self.kind}/{self.name}"

    @property
    def digest(self) -> str:
        """Content digest of the document the spec came from (with any environment patches)."""
        return self.document.digest

    def as_kind(self, model: type[SpecT]) -> ParsedSpec[SpecT] | None:
        """This spec typed as ``model`` (like ``Deployment``), or None when it is another kind."""
        return self if is_spec_of(self, model) else None


def is_spec_of(spec: ParsedSpec, model: type[SpecT]) -> TypeIs[ParsedSpec[SpecT]]:
    """Whether ``spec`` holds a ``model`` (narrows ``spec`` to ``ParsedSpec[model]``)."""
    return isinstance(spec.model, model)


def specs_of(specs: Iterable[ParsedSpec], model: type[SpecT]) -> list[ParsedSpec[SpecT]]:
    """The specs that hold a ``model``, in their order."""
    return [spec for spec in specs if is_spec_of(spec, model)]


def validate_document(
    document: SourceDocument, kinds: Mapping[str, type[SpecT]]
) -> tuple[ParsedSpec[SpecT] | None, list[Diagnostic]]:
    """Check apiVersion and kind, then validate the document with its kind's model."""
    data = document.data
    if not isinstance(data, dict):
        return None, [
            Diagnostic(
                "not-a-mapping",
                "a spec document must be a mapping with apiVersion, kind, metadata and spec, "
                f"not {describe_input(data)}",
                document.location,
            )
        ]
    problems: list[Diagnostic] = []
    api_version = data.get("apiVersion")
    if api_version is None:
        problems.append(
            Diagnostic(
                "missing-field",
                "missing required field 'apiVersion'",
                document.location,
                path="apiVersion",
                hint=f"add 'apiVersion: {API_VERSION}'",
            )
        )
    elif api_version != API_VERSION:
        problems.append(
            Diagnostic(
                "api-version",
                f"apiVersion {describe_input(api_version)} is not supported",
                document.locate(("apiVersion",)),
                path="apiVersion",
                hint=f"use 'apiVersion: {API_VERSION}'",
            )
        )
    kind = data.get("kind")
    if kind is None:
        problems.append(
            Diagnostic(
                "missing-field",
                "missing required field 'kind'",
                document.location,
                path="kind",
                hint=f"one of: {', '.join(kinds)}",
            )
        )
        return None, problems
    model = kinds.get(kind) if isinstance(kind, str) else None
    if model is None:
        guess = did_you_mean(kind, kinds) if isinstance(kind, str) else None
        problems.append(
            Diagnostic(
                "unknown-kind",
                f"unknown kind {describe_input(kind)}",
                document.locate(("kind",)),
                path="kind",
                hint=f"did you mean '{guess}'?" if guess else f"one of: {', '.join(kinds)}",
            )
        )
        return None, problems
    if problems:
        return None, problems
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        return None, translate(exc.errors(include_url=False), document, model)
    metadata = getattr(parsed, "metadata", None)  # every kind's model has one
    name = metadata.name if isinstance(metadata, Metadata) else ""
    return ParsedSpec(kind, name, parsed, document), []
