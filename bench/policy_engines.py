"""Benchmark: evaluating the whole policy library over a generated 1,000-spec repo x 4 environments,
with each candidate Rego engine side by side (evaluations per second, OPA conformance), plus
`mlspec check` end to end. Prints one table. Each engine runs in its own process, so a crash
(regopy has segfaulted on some queries) is reported, not fatal.

Target (issue 4): the full library over 1,000 specs x 4 environments in under 2 s.

Usage: python bench/policy_engines.py [--files 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_specs import generate_repo

REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time
from pathlib import Path
import yaml
from mlspec.app.project import Project
from mlspec.policy.evaluate import PolicySet, graph_document, resource_document, ROOT_QUERY

engine_name, root, cases_path = sys.argv[1], sys.argv[2], sys.argv[3]

class Regopy:
    def __init__(self):
        import regopy
        self._i = regopy.Interpreter()
    def add_policy(self, name, text):
        self._i.add_module(name, text)
    def set_data(self, data):
        import regopy
        self._i = self._i  # regopy has no clear; a fresh interpreter per environment is made below
        self._i.add_data_json(json.dumps(data))
    def evaluate(self, query, document):
        self._i.set_input_term(json.dumps(document))
        out = self._i.query(query)
        if not out.ok():
            raise RuntimeError(str(out))
        expressions = out.expressions()
        return expressions[0] if expressions else None

def make():
    if engine_name == "regorus":
        from mlspec.policy.engine import RegorusEngine
        return RegorusEngine()
    return Regopy()

def normalise(v):
    if isinstance(v, list):
        items = [normalise(x) for x in v]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items()}
    return v

passed = 0
cases = yaml.safe_load(Path(cases_path).read_text())
for case in cases:
    try:
        e = make()
        e.add_policy("case.rego", case["policy"])
        e.set_data(case.get("data") or {})
        passed += normalise(e.evaluate(case["query"], case.get("input") or {})) == normalise(case["expected"])
    except Exception:
        pass

project = Project.open(root)
validation = project.validate()
policies = PolicySet.for_project(None)
evaluations = 0
findings = 0
start = time.perf_counter()
for env in project.environments(validation):
    graph = project.resolve(env, validation).graph
    e = make()
    for path in policies.files:
        e.add_policy(path.name, path.read_text())
    e.set_data({"mlspec": {"graph": graph_document(graph)}})
    environment = {"name": env, "spec": resource_document(graph.environment)["spec"]}
    for ref in graph.order:
        doc = {"resource": resource_document(graph.resources[ref]), "environment": environment, "project": {"name": "bench"}}
        result = e.evaluate(ROOT_QUERY, doc)
        evaluations += 1
        findings += sum(len(p.get("deny", [])) for p in (result or {}).values() if isinstance(p, dict))
elapsed = time.perf_counter() - start
print(json.dumps({"passed": passed, "cases": len(cases), "evaluations": evaluations, "seconds": elapsed, "findings": findings}))
"""


def run_engine(name: str, root: Path) -> dict[str, object]:
    """Run one engine in its own process; a crash is a result too."""
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, name, str(root), str(REPO / "tests" / "fixtures" / "rego_conformance.yaml")],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:80]}"}
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_repo(Path(tmp) / "repo", args.files)
        results = {name: run_engine(name, root) for name in ("regorus", "regopy")}
        start = time.perf_counter()
        check = subprocess.run(
            [sys.executable, "-m", "mlspec", "check", "-C", str(root)], capture_output=True, text=True, check=False
        )
        check_seconds = time.perf_counter() - start
    print(f"\npolicy library over {args.files} spec files x 4 environments\n")
    header = f"{'engine':<10} {'conformance':>12} {'evaluations':>12} {'seconds':>9} {'evals/s':>10}  note"
    print(header)
    print("-" * (len(header) + 20))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<10} {'-':>12} {'-':>12} {'-':>9} {'-':>10}  crashed or failed: {r['error']}")
            continue
        seconds = float(r["seconds"])  # type: ignore[arg-type]
        evals = int(r["evaluations"])  # type: ignore[call-overload]
        print(
            f"{name:<10} {r['passed']:>5}/{r['cases']:<6} {evals:>12} {seconds:>9.2f} {evals / seconds:>10.0f}  {r['findings']} denies"
        )
    print(
        f"\nmlspec check end to end (CLI, 4 environments, regorus in a child process): {check_seconds:.2f} s, exit {check.returncode}"
    )
    regorus = results["regorus"]
    if "seconds" in regorus:
        print(f"target < 2 s for the evaluation: {'met' if float(regorus['seconds']) < 2 else 'NOT met'}")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
