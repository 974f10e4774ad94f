"""Benchmark: `mlspec validate` on generated repos of 1,000 and 5,000 spec files, against the floor of
merely parsing the same files with PyYAML's C loader. Prints one table.

Target (issue 2): validation costs at most 3x the bare parse and grows linearly.

Usage: python bench/validate_scale.py [--sizes 1000 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_specs import generate_repo
from mlspec.app.project import Project


def bare_parse(files: list[Path]) -> None:
    """The floor: read and parse every file with the C loader, nothing else."""
    for path in files:
        list(yaml.load_all(path.read_bytes(), Loader=yaml.CSafeLoader))


def best_of(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = generate_repo(Path(tmp) / f"repo-{size}", size)
            files = [
                root / "mlspec.yaml",
                *sorted(root.rglob("specs/**/*.yaml")),
                *sorted(root.glob("environments/*.yaml")),
            ]
            floor = best_of(args.repeat, lambda files=files: bare_parse(files))
            ours = best_of(args.repeat, lambda root=root: Project.open(root).validate())
            result = Project.open(root).validate()
            assert result.ok, result.diagnostics[:3]
            cli = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "mlspec", "validate", "--format", "compact", str(root)],
                    capture_output=True,
                    check=False,
                )
                cli.append(time.perf_counter() - start)
                assert proc.returncode == 0, proc.stdout[-500:]
            rows.append((size, len(files), len(result.specs), floor, ours, min(cli)))

    print(f"\nmlspec validate vs. bare PyYAML C-loader parse (best of {args.repeat}, seconds)\n")
    header = (
        f"{'spec files':>10} {'docs':>6} {'parse floor':>12} {'mlspec API':>11} {'mlspec CLI':>11} "
        f"{'API/floor':>10} {'per file':>10}"
    )
    print(header)
    print("-" * len(header))
    for size, _files, docs, floor, ours, cli in rows:
        ratio = ours / floor
        print(
            f"{size:>10} {docs:>6} {floor:>12.3f} {ours:>11.3f} {cli:>11.3f} {ratio:>9.2f}x {ours / size * 1e6:>8.0f}us"
        )
    if len(rows) >= 2:
        (s1, *_, o1, _c1), (s2, *_, o2, _c2) = rows[0], rows[-1]
        growth = (o2 / s2) / (o1 / s1)
        print(f"\nper-file cost at {s2} vs {s1} files: {growth:.2f}x (1.00 = perfectly linear)")
    worst = max(r[4] / r[3] for r in rows)
    print(f"target: API/floor <= 3.00x -> {'met' if worst <= 3 else 'NOT met'} (worst {worst:.2f}x)")


if __name__ == "__main__":
    main()
