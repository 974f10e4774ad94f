"""No silent fields: every spec field is read by the code that realises it, or refused at render.

A field is "read" when code outside ``compiler/mlspec/spec/`` names it (as ``.name``, ``["name"`` or
``"name"``, like ../shared/tools/silent_fields.py); otherwise it must be in the one registry of refused
fields, ``mlspec.render.refused``, which the render stage refuses with ``unsupported-by-target``. Adding a
spec field that nothing reads fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, create_model

from mlspec.render import refused as refused_module
from mlspec.render.refused import REFUSED_FIELDS, REFUSED_SOURCE_TYPES, SOURCE_TYPES, models_in
from mlspec.spec.base import StrictModel
from mlspec.spec.deployment import BlueGreenRollout
from mlspec.spec.project_file import LimitsConfig, ProjectSpec
from mlspec.spec.registry import ALL_KINDS
from mlspec.spec.training import Choice, FloatRange, MlpArchitecture
from tests.conftest import REPO

PACKAGE = REPO / "compiler" / "mlspec"
# Fields another part of issue 15 starts reading (not yet on this branch); drop an entry once its reader landed.
READ_ELSEWHERE = {
    (ProjectSpec, "default_environment"): "the CLI's default --env (the application layer reads it)",
}

Field = tuple[type[BaseModel], str]


def spec_fields(roots: list[type[BaseModel]]) -> dict[Field, str]:
    """Every field of the models reachable from ``roots``: (declaring model, attribute) -> its YAML name."""
    found: dict[Field, str] = {}
    seen: set[type[BaseModel]] = set()
    pending = list(roots)
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            found[(model, name)] = info.alias or name
            pending.extend(models_in(info.annotation))
    return found


def code_outside_spec(exclude: tuple[Path, ...] = ()) -> str:
    """The text of the package's code, templates and policies, without spec/ (and ``exclude``)."""
    paths = [
        p
        for p in PACKAGE.rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".rego", ".j2"}
        and p.relative_to(PACKAGE).parts[0] != "spec"
        and p not in exclude
    ]
    return "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in paths)


def is_named(name: str, text: str) -> bool:
    """Whether ``text`` names a field as an attribute, a subscript or a string."""
    return re.search(r"(\.|\[\s*[\"']|[\"'])" + re.escape(name.rstrip("_")) + r"_?\b", text) is not None


def refused_fields() -> set[Field]:
    """The fields the render stage refuses: the registry's fields and the fields of refused source types."""
    fields = {(owner, r.field) for r in REFUSED_FIELDS for owner in r.owners if r.field in owner.model_fields}
    fields |= {(model, name) for model, refusal in REFUSED_SOURCE_TYPES.items() for name in refusal.fields}
    return fields


def silent(roots: list[type[BaseModel]], text: str) -> list[str]:
    """Fields reachable from ``roots`` that ``text`` never names and the registry does not refuse."""
    refused = refused_fields()
    return sorted(
        f"{model.__name__}.{name}"
        for (model, name), yaml_name in spec_fields(roots).items()
        if (model, name) not in refused
        and (model, name) not in READ_ELSEWHERE
        and not (is_named(name, text) or is_named(yaml_name, text))
    )


def test_every_spec_field_is_read_or_refused_at_render() -> None:
    # the registry itself names the refused fields: it must not count as reading them
    text = code_outside_spec(exclude=(Path(refused_module.__file__),))
    assert silent(list(ALL_KINDS.values()), text) == [], (
        "spec fields nothing reads: honour each in the targets it applies to, or refuse it in "
        "mlspec/render/refused.py (REFUSED_FIELDS) with a message that says what is unsupported and the fix"
    )


def test_a_new_field_nothing_reads_is_caught() -> None:
    nested = create_model("Nested", __base__=StrictModel, zq_nobody_reads_this=(int, 0))
    kind = create_model("NewKind", __base__=StrictModel, spec=(list[nested] | None, None))  # type: ignore[valid-type]
    assert silent([kind], code_outside_spec()) == ["Nested.zq_nobody_reads_this"]


def test_the_walk_reaches_nested_models_unions_and_dicts() -> None:
    fields = spec_fields(list(ALL_KINDS.values()))
    for expected in [
        (BlueGreenRollout, "auto_promote"),  # a member of the rollout union
        (MlpArchitecture, "hidden"),  # an Annotated discriminated union
        (Choice, "choices"),  # dict values of a callable-discriminated union
        (FloatRange, "log"),
        (LimitsConfig, "max_depth"),  # the project file's nested models
        *((model, "timestamp_field") for model in SOURCE_TYPES),
    ]:
        assert expected in fields, expected
    assert fields[(ProjectSpec, "default_environment")] == "default_environment"


def test_fields_read_elsewhere_are_real_and_not_refused() -> None:
    fields = spec_fields(list(ALL_KINDS.values()))
    for field in READ_ELSEWHERE:
        assert field in fields and field not in refused_fields(), field


def test_the_registry_names_real_fields() -> None:
    fields = spec_fields(list(ALL_KINDS.values()))
    for refusal in REFUSED_FIELDS:
        for owner in refusal.owners:
            assert (owner, refusal.field) in fields, (owner.__name__, refusal.field)
    common = set.intersection(*(set(model.model_fields) for model in SOURCE_TYPES))
    for model, refusal in REFUSED_SOURCE_TYPES.items():
        own = set(model.model_fields) - common
        assert set(refusal.fields) == own, f"{model.__name__}: list every field of its own, refused with its type"
