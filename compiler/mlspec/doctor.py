"""mlspec doctor: the engines installed, the extras that provide missing ones, and known conflicts.

Only package metadata is read (``importlib.metadata``); no engine is imported. Each rule of
``RULES`` names a pair that has broken platforms before; its version range is not written here
but read from the dependant's own ``Requires-Dist`` (with the extra that pulls the dependency
in), so the check follows whatever the installed release declares.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# (display name, distribution) of every engine mlspec drives.
ENGINES = (
    ("feast", "feast"),
    ("kfp", "kfp"),
    ("kfp-kubernetes", "kfp-kubernetes"),
    ("mlflow", "mlflow"),
    ("torch", "torch"),
    ("onnx", "onnx"),
    ("onnxscript", "onnxscript"),
    ("onnxruntime", "onnxruntime"),
    ("optuna", "optuna"),
    ("evidently", "evidently"),
    ("shap", "shap"),
    ("psycopg", "psycopg"),
    ("redis", "redis"),
    ("kubernetes", "kubernetes"),
    ("regorus", "gordon-to-regorus"),
    ("protobuf", "protobuf"),
)


@dataclass(frozen=True, slots=True)
class Rule:
    """A dependant whose declared requirement on another package must hold for mlspec to work."""

    dependant: str
    extra: str | None  # the dependant's extra that declares the requirement (None: always)
    dependency: str
    why: str


RULES = (
    Rule("feast", "redis", "redis", "Feast's Redis online store (feast[redis]) requires this redis client range"),
    Rule("feast", None, "protobuf", "Feast's registry is protobuf"),
    Rule("kfp", None, "kubernetes", "kfp's compiler and client are built against this kubernetes client range"),
    Rule("kfp", None, "protobuf", "KFP pipeline specs are protobuf; a new protobuf major breaks them"),
    Rule("kfp-kubernetes", None, "protobuf", "kfp-kubernetes platform specs are protobuf"),
    Rule("mlflow-skinny", None, "protobuf", "MLflow's tracking and registry messages are protobuf"),
    Rule("onnx", None, "protobuf", "ONNX models are protobuf"),
    Rule("onnxruntime", None, "protobuf", "onnxruntime's Python API reads ONNX protobuf"),
    Rule("onnxscript", None, "onnx", "torch.onnx's exporter runs on onnxscript, which needs this onnx"),
    Rule("onnxscript", None, "onnx-ir", "onnxscript's IR"),
)


@dataclass(frozen=True, slots=True)
class Engine:
    """One engine: installed version (None when missing) and the mlspec extra that provides it."""

    name: str
    distribution: str
    version: str | None
    extra: str | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """A rule whose requirement the installed versions break."""

    dependant: str
    dependant_version: str
    requirement: str
    installed: str
    why: str


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What doctor found."""

    mlspec: str | None
    engines: tuple[Engine, ...]
    conflicts: tuple[Conflict, ...]
    checked: tuple[str, ...]  # "dependant -> requirement" of every rule checked
    skipped: tuple[str, ...] = field(default=())  # rules not checked: a package is missing
    warnings: tuple[str, ...] = field(default=())  # where the project's state or audit trail could be lost

    @property
    def ok(self) -> bool:
        """True when no installed combination is known to be incompatible."""
        return not self.conflicts


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_INDEX: dict[tuple[str, ...] | None, dict[str, md.Distribution]] = {}


def _distribution(name: str, path: Sequence[str] | None) -> md.Distribution | None:
    """The installed distribution ``name`` (first one on the path wins, as for imports)."""
    key = tuple(path) if path is not None else None
    index = _INDEX.get(key)
    if index is None:
        index = {}
        for dist in md.distributions(path=list(path)) if path is not None else md.distributions():
            index.setdefault(_normalize(dist.metadata["Name"] or ""), dist)
        _INDEX[key] = index
    return index.get(_normalize(name))


def _requirement_class() -> type:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging is nearly always there; pip vendors it too
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]
    return Requirement


def _extras(path: Sequence[str] | None) -> dict[str, str]:
    """Distribution -> the mlspec extra that lists it, from mlspec's own metadata."""
    dist = _distribution("mlspec", path)
    if dist is None:
        return {}
    requirement = _requirement_class()
    out: dict[str, str] = {}
    for line in dist.requires or []:
        req = requirement(line)
        match = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(req.marker or ""))
        if req.marker is None:
            out.setdefault(_normalize(req.name), "(base install)")
        elif match and match[1] not in ("all", "dev"):
            out.setdefault(_normalize(req.name), match[1])
    return out


def _provider(name: str, extras: dict[str, str], path: Sequence[str] | None) -> str | None:
    """The extra that installs ``name``: directly, or through a package one extra installs."""
    if name in extras:
        return extras[name]
    requirement = _requirement_class()
    for direct, extra in sorted(extras.items(), key=lambda item: (item[1].startswith("("), item)):
        dist = _distribution(direct, path)
        for line in (dist.requires or []) if dist else []:
            req = requirement(line)
            if _normalize(req.name) == name and (req.marker is None or req.marker.evaluate({"extra": ""})):
                return f"{extra} (through {direct})"
    return None


def diagnose(path: Sequence[str] | None = None) -> Diagnosis:
    """Installed engines and rule conflicts; ``path`` replaces sys.path for the metadata search (tests)."""
    extras = _extras(path)
    engines = []
    for name, dist_name in ENGINES:
        dist = _distribution(dist_name, path)
        provider = _provider(_normalize(dist_name), extras, path)
        engines.append(Engine(name, dist_name, dist.version if dist else None, provider))
    requirement = _requirement_class()
    conflicts: list[Conflict] = []
    checked: list[str] = []
    skipped: list[str] = []
    for rule in RULES:
        dependant = _distribution(rule.dependant, path)
        dependency = _distribution(rule.dependency, path)
        label = f"{rule.dependant}{f'[{rule.extra}]' if rule.extra else ''} -> {rule.dependency}"
        if dependant is None or dependency is None:
            skipped.append(f"{label} (not installed)")
            continue
        for line in dependant.requires or []:
            req = requirement(line)
            if _normalize(req.name) != _normalize(rule.dependency):
                continue
            if req.marker is not None and not req.marker.evaluate({"extra": rule.extra or ""}):
                continue
            checked.append(f"{label}: {req.name}{req.specifier}")
            if not req.specifier.contains(dependency.version, prereleases=True):
                conflicts.append(
                    Conflict(
                        f"{dependant.metadata['Name']}{f'[{rule.extra}]' if rule.extra else ''}",
                        dependant.version,
                        f"{req.name}{req.specifier}",
                        f"{dependency.metadata['Name']} {dependency.version}",
                        rule.why,
                    )
                )
    conflicts.extend(_opset_conflicts(path))
    mlspec = _distribution("mlspec", path)
    return Diagnosis(
        mlspec.version if mlspec else None, tuple(engines), tuple(conflicts), tuple(checked), tuple(skipped)
    )


def _opset_conflicts(path: Sequence[str] | None) -> list[Conflict]:
    """The opset mlspec exports models at must be one the installed onnx release knows (its VERSION_TABLE)."""
    export = Path(__file__).parent / "runtime" / "export.py"
    onnx = _distribution("onnx", path)
    found = re.search(r"^OPSET = (\d+)", export.read_text(encoding="utf-8"), re.MULTILINE)
    if onnx is None or found is None:
        return []
    helper = next((f for f in onnx.files or [] if str(f) == "onnx/helper.py"), None)
    if helper is None:
        return []
    table = re.findall(r'\(\s*"[\d.]+",\s*\d+,\s*(\d+),', Path(str(onnx.locate_file(helper))).read_text("utf-8"))
    if not table:
        return []
    newest = max(int(opset) for opset in table)
    if int(found[1]) <= newest:
        return []
    return [
        Conflict(
            "mlspec",
            "",
            f"ai.onnx opset {found[1]}",
            f"onnx {onnx.version} (opsets up to {newest})",
            "models are exported at an opset this onnx release does not define",
        )
    ]


def render_text(diagnosis: Diagnosis) -> str:
    """A table of engines, then conflicts."""
    lines = [f"mlspec {diagnosis.mlspec or '(not installed)'}", ""]
    width = max(len(e.name) for e in diagnosis.engines)
    for e in diagnosis.engines:
        where = f"  extra: {e.extra}" if e.extra else ""
        hint = f" (pip install 'mlspec[{e.extra.split()[0]}]')" if e.extra and not e.extra.startswith("(") else ""
        status = e.version or f"missing{hint}"
        lines.append(f"  {e.name:<{width}}  {status:<12}{where if e.version else ''}".rstrip())
    lines.append("")
    for c in diagnosis.conflicts:
        lines.append(
            f"✗ {c.dependant} {c.dependant_version} requires {c.requirement}, installed {c.installed}: {c.why}"
        )
    lines.extend(f"! {warning}" for warning in diagnosis.warnings)
    lines.append(
        f"✗ {len(diagnosis.conflicts)} incompatibility(ies) ({len(diagnosis.checked)} rules checked)"
        if diagnosis.conflicts
        else f"✓ no known incompatibility ({len(diagnosis.checked)} requirements checked, "
        f"{len(diagnosis.skipped)} skipped)"
    )
    return "\n".join(lines) + "\n"


def render_json(diagnosis: Diagnosis) -> str:
    """The diagnosis as JSON."""
    return json.dumps({"ok": diagnosis.ok, **asdict(diagnosis)}, indent=2) + "\n"
