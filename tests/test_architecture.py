"""Architecture gates: the layer contracts, no import cycle, and modules and functions of a readable size.

The contracts live in pyproject.toml ([tool.importlinter]) and are checked by import-linter; the
cycle check walks the whole module graph (function-level imports included, TYPE_CHECKING-only
imports excluded) so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import REPO

PACKAGE = REPO / "compiler" / "mlspec"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100


def test_import_contracts_hold() -> None:
    """`lint-imports` reads the contracts from pyproject.toml and fails on any broken one."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph.find_modules_directly_imported_by(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph.find_modules_directly_imported_by(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycle_lazy_imports_included() -> None:
    sys.path.insert(0, str(REPO / "compiler"))
    try:
        graph = grimp.build_graph("mlspec", exclude_type_checking_imports=True, cache_dir=None)
    finally:
        sys.path.remove(str(REPO / "compiler"))
    assert import_cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The checker itself: a two-module cycle in a throwaway graph is reported."""
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]


def python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_500_lines() -> None:
    too_long = {
        str(path.relative_to(REPO)): n
        for path in python_files()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_function_over_100_lines() -> None:
    too_long: dict[str, int] = {}
    for path in python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(REPO)}::{node.name}"] = length
    assert too_long == {}


def test_every_package_file_ships_in_the_wheel() -> None:
    """A folder of modules without __init__.py, or a data file no package-data glob names, is missing from a wheel."""
    import fnmatch
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["mlspec"]
    template = PACKAGE / "scaffold" / "template"  # copied out as files by `mlspec init`, not imported
    folders = {p.parent for p in python_files() if not p.is_relative_to(template)}
    assert sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").is_file()) == []
    data = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    ]
    unshipped = [path for path in data if not any(fnmatch.fnmatchcase(path, g) for g in globs)]
    assert unshipped == []
