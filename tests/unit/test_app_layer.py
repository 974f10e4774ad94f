"""The application layer's place: no import cycle anywhere (function-level imports included), targets and
stages never import the app layer or the CLI, the app layer never imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "compiler" / "mlspec"
# merge bridges kept until gitops/reconcile.py and gitops/promote.py import from mlspec.app (issue 15)
BRIDGES: set[str] = set()


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = file
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """Every mlspec module ``module`` imports at run time, at the top or inside functions (not TYPE_CHECKING)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            target = _owner(name) if name.startswith("mlspec") else None
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return out


def test_no_import_cycle_lazy_imports_included() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("lower", ["mlspec.targets", "mlspec.render", "mlspec.resolve", "mlspec.policy",
                                   "mlspec.plan", "mlspec.spec", "mlspec.load", "mlspec.apply", "mlspec.state"])  # fmt: skip
def test_stages_and_targets_never_import_the_app_layer_or_the_cli(lower: str) -> None:
    upward = {
        (module, imported)
        for module, imports in GRAPH.items()
        if (module == lower or module.startswith(lower + ".")) and module not in BRIDGES
        for imported in imports
        if imported.startswith(("mlspec.app", "mlspec.cli")) or imported in BRIDGES
    }
    assert upward == set()


def test_the_app_layer_never_imports_the_cli() -> None:
    upward = {
        (m, i)
        for m, imports in GRAPH.items()
        if m.startswith("mlspec.app")
        for i in imports
        if i.startswith("mlspec.cli")
    }
    assert upward == set()


def test_the_facade_reaches_every_use_case() -> None:
    from mlspec.app.project import Project

    for use_case in ("validate", "check", "render", "plan", "apply", "destroy", "rollback", "status", "monitor",
                     "score", "build_edge", "compliance", "drift", "session"):  # fmt: skip
        assert callable(getattr(Project, use_case)), use_case
