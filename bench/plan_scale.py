"""Benchmark: `mlspec plan` over the generated 1,000-spec repo x 4 environments: cold (empty caches and state
applied), no change, and one spec changed, in one run. Prints one table.

Targets (issue 5): a no-change plan under 0.5 s and a one-spec-change plan under 1 s, against a full cold plan.

Usage: python bench/plan_scale.py [--files 1000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_specs import generate_repo
from mlspec.app.applying import apply_environment
from mlspec.app.options import ApplyOptions, PlanOptions
from mlspec.app.planning import plan_session
from mlspec.app.project import Project


def plan_all(root: Path) -> tuple[float, int]:
    """Plan every environment in one process (validation shared); returns (seconds, pending changes)."""
    start = time.perf_counter()
    project = Project.open(root)
    validation = project.validate()
    pending = 0
    for env in project.environments(validation):
        with project.session(env, validation) as session:
            result = plan_session(session, PlanOptions())
        assert result.plan is not None, result.diagnostics[:3]
        pending += len(result.plan.pending)
    return time.perf_counter() - start, pending


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_repo(Path(tmp) / "repo", args.files)
        shutil.rmtree(root / ".mlspec", ignore_errors=True)
        cold, cold_pending = plan_all(root)
        start = time.perf_counter()
        project = Project.open(root)
        for env in project.environments():
            apply_environment(project, env, ApplyOptions(engines=False))  # the local engines are not what this measures
        apply_seconds = time.perf_counter() - start
        unchanged, unchanged_pending = plan_all(root)
        view = root / "specs" / "product-00007" / "view-1.yaml"
        view.write_text(view.read_text().replace("ttl: 7d", "ttl: 8d"))
        changed, changed_pending = plan_all(root)
    rows = [
        ("plan, 4 envs, cold (nothing applied, empty caches)", cold, cold_pending, "baseline"),
        ("apply, 4 envs (policies, state, output files)", apply_seconds, 0, ""),
        ("plan, 4 envs, nothing changed", unchanged, unchanged_pending, "target < 0.5 s"),
        ("plan, 4 envs, one view changed", changed, changed_pending, "target < 1 s"),
    ]
    print(f"\nplan at scale: {args.files} spec files x 4 environments (in-process, seconds)\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}} {'seconds':>8} {'changes':>8}  note")
    print("-" * (width + 35))
    for name, seconds, pending, note in rows:
        print(f"{name:<{width}} {seconds:>8.2f} {pending:>8}  {note}")
    print(
        f"\nno-change plan < 0.5 s: {'met' if unchanged < 0.5 else 'NOT met'}; one-change plan < 1 s: {'met' if changed < 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
