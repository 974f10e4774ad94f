"""No secret value leaks: canary values behind every secret reference, then every command's bytes and files scanned.

The reference platform in a real git repository, SQLite state; real ``mlspec`` processes. Each reference the
specs make (``secret://<env>/feast`` connections, ``env://MLSPEC_STATE_URL``, MLflow's ``env://MLFLOW_TRACKING_URI``)
is given a unique canary value in the process environment; validate, check, render, plan, apply (local artifacts
only, prod to its output folder behind its access rules and a reviewed merge), an access refusal, audit, state and
the pull-request comment run; nothing they print and no file under the project may contain a canary. The
references themselves must be in the rendered files, so a renderer that dropped them would be caught too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlspec.render.feast import connection_variables
from mlspec.runtime.context import secret_variable
from tests.conftest import copy_platform, run_mlspec
from tests.unit.test_serving_auth import IdentityProvider

ENVS = ("local", "dev", "staging", "prod")
SHARED = ("dev", "staging", "prod")  # the environments with a secret://<env>/feast connection


def canaries() -> dict[str, str]:
    """A distinct, unmistakable value for every variable a reference in the reference platform resolves to."""
    names = ["MLSPEC_STATE_URL", "MLFLOW_TRACKING_URI"]
    for env in SHARED:
        ref = f"secret://{env}/feast"
        names += [secret_variable(ref), *connection_variables(ref)]
    return {name: f"canary-{i:02d}-{name.lower().replace('_', '-')}-Zq9x" for i, name in enumerate(names)}


def git(root: Path, *args: str, email: str = "omar@bank.ae") -> None:
    ident = ["-c", f"user.email={email}", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "-C", str(root), *ident, *args], capture_output=True, check=True)


def test_no_canary_secret_appears_in_any_output_or_file(tmp_path: Path) -> None:
    (tmp_path / "platform").mkdir()
    root = copy_platform(tmp_path / "platform")
    (root / ".gitignore").write_text(".mlspec/\nrendered/\n")
    ci = IdentityProvider()  # the apply-prod job's OIDC issuer (GitHub Actions' stand-in on loopback)
    prod = root / "environments/prod.yaml"
    prod.write_text(prod.read_text().replace("ci: {repository:", f"ci: {{issuer: '{ci.issuer}', repository:"))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "platform")
    # a reviewed change: omar's branch merged by a release manager, as prod's access.approval requires
    git(root, "checkout", "-qb", "change")
    with (root / "environments/prod.yaml").open("a") as env:
        env.write("# reviewed\n")
    git(root, "commit", "-qam", "a change")
    git(root, "checkout", "-q", "main")
    git(root, "merge", "--no-ff", "-qm", "Merge change", "change", email="fatima@bank.ae")

    secrets = canaries()
    token = ci.token(aud="mlspec", sub="repo:uae-bank/ml-platform:environment:production", ref="refs/heads/main",
                     repository="uae-bank/ml-platform", environment="production")  # fmt: skip
    env = {**secrets, "MLSPEC_ACTOR": "ci@github", "MLSPEC_OIDC_TOKEN": token}
    out = tmp_path / "outside"
    out.mkdir()
    commands: list[tuple[str, ...]] = [
        ("validate",),
        ("check", "--all-envs"),
        ("check", "--all-envs", "--format", "json"),
        ("render", "--all-envs"),
        *[("plan", "--env", e) for e in ENVS],
        ("plan", "--env", "prod", "--format", "json", "--out", str(out / "prod-plan.json")),
        ("apply", "--env", "local", "--auto-approve", "--artifacts-only"),
        ("apply", "--env", "prod", "--auto-approve", "--as", "intruder@example.com"),  # refused, audited
        ("apply", "--env", "prod", "--auto-approve"),
        ("audit", "log"),
        ("audit", "verify"),
        ("audit", "live", "--env", "prod"),
        ("state", "list"),
        ("state", "show", "--env", "prod", "Environment/prod"),
        ("state", "show", "--env", "prod", "DataSource/customer-profile"),
        ("comment", "--all-envs", "-o", str(out / "comment.md")),
    ]
    printed: list[tuple[str, str]] = []
    codes: dict[str, int] = {}
    for args in commands:
        typed = "intruder@example.com" in args  # no token: a name typed in proves nothing
        proc = run_mlspec(*args, cwd=root, env={k: v for k, v in env.items() if not (typed and k == "MLSPEC_OIDC_TOKEN")},
                          timeout=300)  # fmt: skip
        codes[" ".join(args)] = proc.returncode
        printed.append((" ".join(args), proc.stdout + proc.stderr))
    texts = dict(printed)
    assert codes["apply --env prod --auto-approve"] == 0, texts["apply --env prod --auto-approve"]
    assert codes["apply --env local --auto-approve --artifacts-only"] == 0, texts
    assert "intruder@example.com is only asserted" in texts["apply --env prod --auto-approve --as intruder@example.com"]
    assert "access-denied by intruder@example.com" in texts["audit log"]
    assert all(code == 0 for cmd, code in codes.items() if "intruder" not in cmd), {
        c: texts[c] for c, k in codes.items() if k
    }

    # every byte printed
    for command, text in printed:
        for name, value in secrets.items():
            assert value not in text, f"{name}'s value printed by 'mlspec {command}'"
    # every file written: rendered/, .mlspec/ (the SQLite state database, its journals, outputs, caches), the rest
    files = [p for p in (*root.rglob("*"), *out.rglob("*")) if p.is_file() and ".git" not in p.parts]
    assert any(p.name == "state.db" for p in files) and any("output" in p.parts for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, f"{name}'s value written to {path.relative_to(tmp_path)}"

    # the references themselves are there, where the deployer fills them in
    for env_name in SHARED:
        for folder in (root / "rendered" / env_name, *([root / ".mlspec/prod/output"] if env_name == "prod" else [])):
            store = (folder / "feast/feature_store.yaml").read_text()
            assert "${" + secret_variable(f"secret://{env_name}/feast") + "_REGISTRY_URL}" in store, folder
            assert "${" + secret_variable(f"secret://{env_name}/feast") + "_REDIS}" in store, folder
