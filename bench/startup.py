"""Benchmark: start-up of `mlspec --help` and `mlspec validate` on the reference platform, against the
bare interpreter, plus the heaviest imports of each path (python -X importtime). Prints one table.

Targets (issue 2): --help under 0.3 s, validate under 0.6 s of wall time.

Usage: python bench/startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = [
    ("python -c pass (floor)", [sys.executable, "-c", "pass"], None),
    ("mlspec --help", [sys.executable, "-m", "mlspec", "--help"], 0.3),
    ("mlspec validate (reference)", [sys.executable, "-m", "mlspec", "validate", str(REPO)], 0.6),
]


def wall(cmd: list[str], runs: int) -> list[float]:
    """Wall time of ``runs`` fresh processes."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def heaviest_imports(cmd: list[str], top: int = 5) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, check=True)
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) == 1:  # top-level imports only
            totals[match.group(3)] = totals.get(match.group(3), 0) + int(match.group(1)) / 1e6
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"\nstart-up wall time over {args.runs} runs (seconds)\n")
    header = f"{'command':<30} {'median':>8} {'p90':>8} {'target':>8} {'status':>8}"
    print(header)
    print("-" * len(header))
    for name, cmd, target in CASES:
        times = sorted(wall(cmd, args.runs))
        median = statistics.median(times)
        p90 = times[int(0.9 * (len(times) - 1))]
        status = "" if target is None else ("met" if median < target else "MISSED")
        shown = "" if target is None else f"{target:.2f}"
        print(f"{name:<30} {median:>8.3f} {p90:>8.3f} {shown:>8} {status:>8}")
    for name, cmd, _target in CASES[1:]:
        tops = ", ".join(f"{mod} {secs * 1000:.0f} ms" for mod, secs in heaviest_imports(cmd))
        print(f"\nheaviest imports of '{name}': {tops}")


if __name__ == "__main__":
    main()
