"""The main job on embedded defaults: what `make demo` runs.

Today: validate the reference platform, show the platform the specs describe,
check every policy, render every environment's artifacts, plan and apply `local`
(into .mlspec/local/output, with state and a verified audit log), print prod's
dependency graph, and generate the local data. The local platform's real engines
(Feast, KFP runner, MLflow, serving) plug in as targets in a later issue.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    """Run the demo; returns the process exit code."""
    from generate_data import generate
    from mlspec.cli import main as mlspec_main
    from mlspec.project import Project
    from mlspec.spec.environment import Environment
    from mlspec.spec.registry import RESOURCE_KINDS

    print("==> mlspec validate (the reference platform in specs/ and environments/)")
    code = mlspec_main(["validate", str(ROOT)])
    if code != 0:
        return code
    started = time.perf_counter()
    result = Project.open(ROOT).validate()
    elapsed = time.perf_counter() - started

    print("\n==> the platform these specs describe")
    kinds = Counter(spec.kind for spec in result.specs)
    for kind in RESOURCE_KINDS:
        count = kinds.get(kind, 0)
        names = ", ".join(s.name for s in result.specs if s.kind == kind)
        print(f"  {kind:<17} {count:>2}  {names}")
    print("\n==> environments")
    for spec in result.specs:
        if isinstance(spec.model, Environment):
            env = spec.model.spec
            where = env.targets.kubernetes.namespace if env.targets.kubernetes else "this machine"
            print(
                f"  {spec.name:<8} tier={env.tier:<11} region={env.region:<10} "
                f"allowed={','.join(env.data_residency.allowed_regions):<28} runs on: {where}"
            )

    print("\n==> mlspec check --all-envs (Rego policies: residency, encryption, access, rollout, governance)")
    code = mlspec_main(["check", "--all-envs", "-C", str(ROOT)])
    if code != 0:
        return code

    print("\n==> mlspec render --all-envs (what Feast, Kubeflow, KServe, Argo CD and MLflow consume)")
    code = mlspec_main(["render", "--all-envs", "-C", str(ROOT)])
    if code != 0:
        return code
    print("\n==> mlspec plan --env local, then apply it, then plan again (a no-op)")
    if mlspec_main(["plan", "--env", "local", "-C", str(ROOT)]) != 0:
        return 1
    if mlspec_main(["apply", "--env", "local", "--auto-approve", "-C", str(ROOT)]) != 0:
        return 1
    mlspec_main(["plan", "--env", "local", "-C", str(ROOT)])
    mlspec_main(["audit", "verify", "-C", str(ROOT)])

    print("\n==> mlspec graph --env prod")
    mlspec_main(["graph", "--env", "prod", "-C", str(ROOT)])

    print("\n==> local data (deterministic, scripts/generate_data.py)")
    for name, path in generate(ROOT / "data").items():
        print(f"  {name:<24} {path.relative_to(ROOT)}")
    print(
        f"\n✓ {len(result.specs)} specs valid (validation took {elapsed * 1000:.0f} ms); "
        "artifacts under rendered/<env>/, data under data/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
