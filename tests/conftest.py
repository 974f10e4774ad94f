"""Shared test helpers: spec factories, files-as-dict projects, and a CLI runner."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlspec.cli import main
from mlspec.load import Limits, load_bytes
from mlspec.spec import RESOURCE_KINDS
from mlspec.spec.validate import ParsedSpec, validate_document

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass
class CliResult:
    """What one CLI run printed and returned."""

    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run the CLI in-process (fast) and capture what it printed."""

    def run(*args: str, cwd: Path | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def run_mlspec(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process, as a user would."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlspec", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write a files-as-dict tree under ``root``; text is dedented."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return root


def recorded_images(registry: str) -> str:
    """An images.lock.json recording the runtime and serving images `mlspec image build --push REGISTRY` would
    (renders of cluster environments name them by digest)."""
    images = [
        {"registry": registry, "role": role, "name": f"mlspec-{role}", "tag": "t", "digest": digest,
         "image_id": digest, "size": 1, "sbom": f"images/sbom/mlspec-{role}.cdx.json"}
        for role, digest in (("runtime", "sha256:" + "1" * 64), ("serving", "sha256:" + "2" * 64))
    ]  # fmt: skip
    return json.dumps({"images": images})


def copy_platform(root: Path) -> Path:
    """A copy of the reference platform (project file, specs, environments, image record) under ``root``."""
    for name in ("mlspec.yaml", "specs", "environments", "images.lock.json"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    return root


def parse(text: str, name: str = "spec.yaml") -> tuple[list[ParsedSpec], list]:  # type: ignore[type-arg]
    """Load and validate YAML text; returns (valid specs, every diagnostic)."""
    documents, diagnostics = load_bytes(textwrap.dedent(text).lstrip("\n").encode(), name, Limits())
    specs = []
    for document in documents:
        parsed, problems = validate_document(document, RESOURCE_KINDS)
        diagnostics.extend(problems)
        if parsed is not None:
            specs.append(parsed)
    return specs, diagnostics


MINIMAL = {
    "DataSource": """
        apiVersion: mlspec/v1
        kind: DataSource
        metadata: {name: txns, owner: payments}
        spec:
          type: file
          path: data/txns.parquet
          timestamp_field: event_ts
          region: uae-north
          classification: pii
          encryption: {at_rest: true, kms_key: kms://payments}
        """,
    "Entity": """
        apiVersion: mlspec/v1
        kind: Entity
        metadata: {name: customer}
        spec: {join_keys: [customer_id], value_type: int64}
        """,
    "FeatureView": """
        apiVersion: mlspec/v1
        kind: FeatureView
        metadata: {name: stats}
        spec:
          entities: [customer]
          source: txns
          ttl: 7d
          features:
            - {name: txn_count, dtype: int64}
            - {name: txn_avg, dtype: float32}
        """,
    "FeatureService": """
        apiVersion: mlspec/v1
        kind: FeatureService
        metadata: {name: fraud-features}
        spec:
          features: [{view: stats}]
        """,
    "TrainingPipeline": """
        apiVersion: mlspec/v1
        kind: TrainingPipeline
        metadata: {name: fraud-detector}
        spec:
          features: fraud-features
          label: {source: txns, field: is_fraud}
          model:
            task: binary_classification
            architecture: {type: mlp, hidden: [16]}
        """,
    "Deployment": """
        apiVersion: mlspec/v1
        kind: Deployment
        metadata: {name: fraud-api}
        spec:
          model: {name: fraud-detector}
          rollout: {strategy: canary, steps: [10, 50, 100]}
        """,
    "Environment": """
        apiVersion: mlspec/v1
        kind: Environment
        metadata: {name: prod}
        spec:
          tier: production
          region: uae-north
          data_residency: {allowed_regions: [uae-north, uae-central]}
        """,
    "Waiver": """
        apiVersion: mlspec/v1
        kind: Waiver
        metadata: {name: legacy-txns}
        spec:
          policy: residency.region
          resources: [DataSource/txns]
          reason: migration ML-123 moves this table to uae-north
          approved_by: ciso
          expires: 2027-03-31
        """,
}


def minimal_platform() -> str:
    """Every kind once, referring to each other correctly, as one multi-document text."""
    return "---\n".join(textwrap.dedent(text).lstrip("\n") for text in MINIMAL.values())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on loopback (it can run here, so it is not faked); yields its URL."""
    import socket
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_dir = Path(sys.executable).parent
    process = subprocess.Popen(
        [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", (folder / "a").as_uri()],
        stdout=subprocess.DEVNULL, stderr=open(folder / "log", "w"),  # noqa: SIM115
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, folder / "log", 90)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    """Wait until ``url``/health answers 200; fail with the end of ``log`` if the process exits or time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                return
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.3)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (append them): killed and reaped after it, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def gnupg() -> Iterator[Path]:
    """A throw-away GNUPGHOME (short path: gpg-agent's socket path has a length limit)."""
    home = Path(tempfile.mkdtemp(prefix="gpg-"))
    home.chmod(0o700)
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)}, check=False)
        shutil.rmtree(home, ignore_errors=True)


def gen_key(gnupg: Path, uid: str) -> str:
    """A new ed25519 signing key in ``gnupg``; its fingerprint."""
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
        capture_output=True, check=True, env=env,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", uid], capture_output=True, text=True, check=True, env=env
    ).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def approve_waivers(root: Path, gnupg: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the project's waivers count outside the local tier as an approver would: every non-local environment
    approves by signed commit with a new key (the CISO's), every waiver names that key, and the project is
    committed signed by it. Returns the key's fingerprint."""
    monkeypatch.setenv("GNUPGHOME", str(gnupg))
    listed = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys", "ciso@bank.ae"], capture_output=True,
                            text=True, check=False).stdout  # fmt: skip
    fingerprints = [line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")]
    key = fingerprints[0] if fingerprints else gen_key(gnupg, "CISO <ciso@bank.ae>")
    approval = f"{{required: true, method: signed_commit, approvers: [{key}]}}"
    for path in sorted((root / "environments").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if "tier: local" in text:
            continue
        if re.search(r"\n    approval: .*", text):
            text = re.sub(r"\n    approval: .*", "\n    approval: " + approval, text)
        else:
            text = text.rstrip("\n") + "\n  access:\n    approval: " + approval + "\n"
        path.write_text(text, encoding="utf-8")
    for path in sorted((root / "specs").rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if "kind: Waiver" in text:
            path.write_text(re.sub(r"approved_by: .*", f"approved_by: {key}", text), encoding="utf-8")
    git = ["git", "-C", str(root), "-c", "user.email=ciso@bank.ae", "-c", "user.name=CISO"]
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        (root / ".gitignore").write_text(".mlspec/\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", f"user.signingkey={key}", "commit", f"--gpg-sign={key}", "-qm", "waivers"], check=True,
                   capture_output=True)  # fmt: skip
    return key


@contextlib.contextmanager
def feast_serve(repo: Path, env: dict[str, str]) -> Iterator[str]:
    """Feast's own feature server (``feast serve``) on a rendered, applied repository; yields its URL."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = repo.parent / f"feature-server-{port}.log"
    feast = str(Path(sys.executable).parent / "feast")
    with log.open("wb") as out:
        server = subprocess.Popen([feast, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=repo,
                                  stdout=out, stderr=out, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log, 120)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
