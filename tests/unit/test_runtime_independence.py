"""runtime/ and serving/ run in slim images: they import only themselves and mlspec's leaf utilities.

Two checks: every import statement in their source (function-level ones included) names an allowed module,
and importing every one of their modules in a fresh interpreter that refuses the rest of mlspec succeeds.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlspec

PACKAGE = Path(mlspec.__file__).parent
INDEPENDENT = ("mlspec.runtime", "mlspec.serving")
# leaf utilities the slim images carry (mlspec.errors imports mlspec.diagnostics, a dataclass module)
LEAVES = ("mlspec.crypto", "mlspec.atomic", "mlspec.failpoints", "mlspec.errors", "mlspec.diagnostics")
ALLOWED = ("mlspec", *INDEPENDENT, *LEAVES)  # "mlspec" itself: __version__, its other names are lazy


def allowed(module: str) -> bool:
    """True when ``module`` is one the independent packages may import."""
    return module == "mlspec" or any(module == a or module.startswith(a + ".") for a in ALLOWED[1:])


def modules() -> list[tuple[str, Path]]:
    """Every module of the independent packages, with its file."""
    found = []
    for package in INDEPENDENT:
        folder = PACKAGE / package.split(".", 1)[1]
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every mlspec import in ``path``, at any depth (lazy imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
            if node.module == "mlspec":  # from mlspec import x: x may be a submodule
                names += [(node.lineno, f"mlspec.{alias.name}") for alias in node.names if alias.name != "__version__"]
    return [(line, name) for line, name in names if name == "mlspec" or name.startswith("mlspec.")]


def test_runtime_and_serving_sources_import_only_themselves_and_leaf_utilities() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}"
        for _, path in modules()
        for line, name in imported_names(path)
        if not allowed(name)
    ]
    assert not wrong, "\n".join(wrong)


BLOCKER = """
import importlib.abc, importlib.util, json, sys

ALLOWED = tuple(json.loads(sys.argv[1]))


class Refused(Exception):
    pass


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("mlspec.") and not any(name == a or name.startswith(a + ".") for a in ALLOWED[1:]):
            raise Refused(f"{name} imported (chain: {[m for m in sys.modules if m.startswith('mlspec')][-4:]})")
        return None


sys.meta_path.insert(0, Block())
skipped = []
for module in json.loads(sys.argv[2]):
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:  # an optional third-party package this machine lacks
        if (exc.name or "").startswith("mlspec"):
            raise
        skipped.append(f"{module} ({exc.name})")
print(json.dumps({"skipped": skipped}))
"""


@pytest.mark.slow  # imports every engine (torch, mlflow, Evidently...)
def test_every_runtime_and_serving_module_imports_with_the_compiler_blocked() -> None:
    names = [name for name, _ in modules() if not name.endswith("__main__")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, json.dumps(ALLOWED), json.dumps(names)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    skipped = json.loads(done.stdout.strip().splitlines()[-1])["skipped"]
    assert len(skipped) < len(names), f"nothing could be imported: {skipped}"


def test_the_blocker_refuses_a_compiler_import() -> None:
    # the check above would pass vacuously if the finder never fired: a module outside the allowed set must fail
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, json.dumps(ALLOWED), json.dumps(["mlspec.serving.config", "mlspec.spec"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and "Refused: mlspec.spec imported" in done.stderr
