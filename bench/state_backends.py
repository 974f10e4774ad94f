"""Benchmark: plan and apply of the generated 1,000-spec repo x 4 environments against the SQLite and the
PostgreSQL state backends, side by side in one run. Prints one table and whether PostgreSQL is within 2x of
SQLite (the target).

Apply writes state per resource, each write (resource + audit record) its own committed transaction, on both
backends: that is the durability apply promises, so nothing here batches across resources. The engines are off
(``engines=False``): what differs between the rows is the state backend.

PostgreSQL: ``MLSPEC_TEST_POSTGRES_URL`` when set (``make test``'s server), otherwise a server started for the
run with scripts/test_services.py (fsync off there, like the test server: this measures round trips and
server work, not the disk).

Usage: python bench/state_backends.py [--files 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_specs import generate_repo
from mlspec.app.applying import apply_environment
from mlspec.app.options import ApplyOptions
from mlspec.app.paths import state_store
from mlspec.app.project import Project
from plan_scale import plan_all

REPO = Path(__file__).resolve().parent.parent
POSTGRES_STATE = (
    "spec:\n  specs: [specs]\n  environments: environments\n  state: {backend: postgres, url: env://MLSPEC_STATE_URL}\n"
)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The test server's URL, or a server started for this run."""
    if os.environ.get("MLSPEC_TEST_POSTGRES_URL"):
        yield os.environ["MLSPEC_TEST_POSTGRES_URL"]
        return
    spec = importlib.util.spec_from_file_location("test_services", REPO / "scripts" / "test_services.py")
    assert spec is not None and spec.loader is not None
    services = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(services)
    with services.postgres() as url:
        yield url


def fresh_database(server: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return server.rsplit("/", 1)[0] + f"/{name}"


def apply_all(root: Path) -> tuple[float, int]:
    """Apply every environment (artifacts and state, no engines); returns (seconds, state writes)."""
    start = time.perf_counter()
    project = Project.open(root)
    for env in project.environments():
        apply_environment(project, env, ApplyOptions(engines=False))
    seconds = time.perf_counter() - start
    store = state_store(project)
    try:
        writes = sum(len(store.read(env).resources) for env in store.environments())
    finally:
        store.close()
    return seconds, writes


def state_writes(root: Path, count: int) -> float:
    """Seconds for ``count`` bare put() calls (resource + audit, one transaction each): the backend alone."""
    from mlspec.state.model import ResourceState

    store = state_store(Project.open(root))
    try:
        start = time.perf_counter()
        for i in range(count):
            resource = ResourceState(f"DataSource/bench-{i}", "f" * 64, {"i": i})
            store.put("bench", resource, ("bench", "rev", "", {"type": "change", "ref": resource.ref}))
        return time.perf_counter() - start
    finally:
        store.close()


def measure(root: Path) -> dict[str, tuple[float, int]]:
    """Every row of the table for one backend."""
    rows = {"plan, cold": plan_all(root), "apply": apply_all(root), "plan, nothing changed": plan_all(root)}
    view = root / "specs" / "product-00007" / "view-1.yaml"
    view.write_text(view.read_text().replace("ttl: 7d", "ttl: 8d"))
    rows["plan, one view changed"] = plan_all(root)
    rows["apply, one view changed"] = apply_all(root)
    rows["1000 bare state writes"] = (state_writes(root, 1000), 1000)
    return rows


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as server:
        base = generate_repo(Path(tmp) / "base", args.files)
        shutil.rmtree(base / ".mlspec", ignore_errors=True)
        lite = Path(shutil.copytree(base, Path(tmp) / "sqlite"))
        pg = Path(shutil.copytree(base, Path(tmp) / "postgres"))
        text = (pg / "mlspec.yaml").read_text()
        (pg / "mlspec.yaml").write_text(
            text.replace("spec: {specs: [specs], environments: environments}\n", POSTGRES_STATE)
        )
        os.environ["MLSPEC_STATE_URL"] = fresh_database(server)
        plan_all(base)  # warm the interpreter up, so neither backend pays for going first
        sqlite_rows = measure(lite)
        postgres_rows = measure(pg)
    print(f"\nstate backends: {args.files} spec files x 4 environments (in-process, seconds)\n")
    width = max(len(name) for name in sqlite_rows)
    print(f"{'what':<{width}} {'sqlite':>8} {'postgres':>9} {'ratio':>6} {'count':>6}")
    print("-" * (width + 34))
    worst = 0.0
    for name, (lite_s, count) in sqlite_rows.items():
        pg_s = postgres_rows[name][0]
        ratio = pg_s / lite_s if lite_s else float("inf")
        if not name.startswith("1000 bare"):
            worst = max(worst, ratio)
        print(f"{name:<{width}} {lite_s:>8.2f} {pg_s:>9.2f} {ratio:>5.2f}x {count:>6}")
    bare = postgres_rows["1000 bare state writes"][0] / sqlite_rows["1000 bare state writes"][0]
    print(
        f"\nPostgreSQL within 2x of SQLite on plan and apply: {'met' if worst <= 2 else 'NOT met'} (worst {worst:.2f}x); "
        f"bare state writes alone: {bare:.2f}x"
    )


if __name__ == "__main__":
    main()
