"""Benchmark: `mlspec render --all-envs` on a generated 1,000-spec repo (4 environments), cold, warm, and after
one spec changed, against (a) the real `feast plan` on the equivalent feature repo and (b) compiling the same
pipelines one by one with the kfp compiler. Prints one table.

Targets (issue 3): resolve + render 1,000 specs x 4 environments in under 5 s; a re-render after one spec
changed in under 1 s (the content-hash cache rebuilds only what that spec affects).

Usage: python bench/render_scale.py [--files 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_specs import generate_repo

PY = sys.executable
FEAST = str(Path(PY).parent / "feast")

COMPILE_ONE_BY_ONE = """
import sys, time
from mlspec.app.project import Project
from mlspec.render.kfp import _compile, pipeline_inputs
project = Project.open(sys.argv[1])
graph = project.resolve("dev").graph
jobs = []
for spec in graph.of_kind("TrainingPipeline"):
    jobs.append(pipeline_inputs(spec.model, gpu=True))
    if spec.model.spec.resources.gpu and spec.model.spec.resources.gpu.fallback == "cpu":
        jobs.append(pipeline_inputs(spec.model, gpu=False))
start = time.perf_counter()
for job in jobs:
    _compile(job)
print(len(jobs), time.perf_counter() - start)
"""


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall time of one command, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_repo(Path(tmp) / "repo", args.files)
        render = [PY, "-m", "mlspec", "render", "--all-envs", "-C", str(root), "-o", str(root / "rendered")]
        shutil.rmtree(root / ".mlspec", ignore_errors=True)
        cold, out = timed(render)
        files = sum(int(line.split(": ")[1].split()[0]) for line in out.splitlines() if ": " in line)
        warm, _ = timed(render)
        view = root / "specs" / "product-00007" / "view-1.yaml"
        view.write_text(view.read_text().replace("description: First feature", "description: First feature v2"))
        changed, out_changed = timed(render)
        written = sum(int(line.split("(")[1].split()[0]) for line in out_changed.splitlines() if "written" in line)
        pipeline = root / "specs" / "product-00003" / "pipeline-0.yaml"
        pipeline.write_text(pipeline.read_text().replace("epochs: 10", "epochs: 12"))
        changed_pipeline, _ = timed(render)

        feast_repo = root / "rendered" / "local" / "feast"
        (root / ".mlspec" / "local" / "feast").mkdir(parents=True, exist_ok=True)
        feast_plan, _ = timed([FEAST, "plan"], cwd=feast_repo, env={"MLSPEC_PROJECT_ROOT": str(root)})
        kfp_total, kfp_out = timed([PY, "-c", COMPILE_ONE_BY_ONE, str(root)])
        compiles, compile_seconds = kfp_out.split()

    rows = [
        ("mlspec render, 4 envs, cold cache", cold, f"{files} files, target < 5 s"),
        ("mlspec render, 4 envs, nothing changed", warm, "all from cache"),
        ("mlspec render, 4 envs, one view changed", changed, f"{written} files rewritten, target < 1 s"),
        ("mlspec render, 4 envs, one pipeline changed", changed_pipeline, "one kfp compile per variant"),
        ("feast plan (1 env's feature repo)", feast_plan, "baseline: the real feast CLI"),
        (
            f"kfp compiler, {compiles} pipelines one by one (1 env)",
            kfp_total,
            f"{float(compile_seconds):.2f} s compiling",
        ),
    ]
    print(f"\nrender at scale: {args.files} spec files x 4 environments, wall seconds on {os.cpu_count()} cores\n")
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}} {'seconds':>8}  note")
    print("-" * (width + 40))
    for name, seconds, note in rows:
        print(f"{name:<{width}} {seconds:>8.2f}  {note}")
    print(f"\ncold render target < 5 s: {'met' if cold < 5 else 'NOT met'}; one-spec re-render < 1 s: "
          f"{'met' if changed < 1 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
