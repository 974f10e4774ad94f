"""Edge package commands (registered on the main CLI): ``edge build``, ``edge verify`` and ``edge run``.

Exit codes: 0 ok, 1 the package is invalid (or the build failed), 2 the command line is wrong (no trusted key,
an unreadable key or input).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlspec.cli_lifecycle import PROJECT_OPTION
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from mlspec.edge.verify import Manifest

BUNDLED_WARNING = (
    "WARNING: --trust-bundled-key: trusting the public key inside the package ({fingerprint}). This proves the "
    "files match their signature, NOT who signed them: anyone can rebuild and re-sign a package with their own key. "
    "Pass --public-key or --fingerprint to know the package comes from your signer."
)


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


@commands.group()
def edge() -> None:
    """Signed model packages for devices (mode: edge Deployments): build, verify, run."""


def trust_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--public-key / --fingerprint / --trust-bundled-key."""
    command = click.option(
        "--trust-bundled-key",
        is_flag=True,
        help="Trust the package's own signer.pub (integrity only, NOT who signed it; said loudly).",
    )(command)
    command = click.option(
        "--fingerprint", "pin", metavar="sha256:HEX", help="The trusted signer's key fingerprint (pins signer.pub)."
    )(command)
    return click.option(
        "--public-key",
        "public_key",
        type=click.Path(path_type=Path, dir_okay=False),
        help="The trusted signer's public key (PEM).",
    )(command)


def _trusted(public_key: Path | None, pin: str | None, bundled: bool) -> bytes | None:
    given = sum((public_key is not None, pin is not None, bundled))
    if given == 0:
        raise click.UsageError(
            "say which signer you trust: --public-key FILE (PEM) or --fingerprint sha256:HEX "
            "(--trust-bundled-key checks integrity only)"
        )
    if given > 1:
        raise click.UsageError("give one of --public-key, --fingerprint and --trust-bundled-key")
    if public_key is None:
        return None
    try:
        return public_key.read_bytes()
    except OSError as exc:
        raise click.UsageError(f"cannot read the public key {public_key}: {exc.strerror or exc}") from None


def _verify(package: Path, public_key: Path | None, pin: str | None, bundled: bool) -> Manifest:
    """The verified manifest; exits 1 (invalid) or 2 (no usable trusted key) with a message otherwise."""
    from mlspec.edge import PackageInvalidError, SigningKeyError, verify_package
    from mlspec.edge.signing import fingerprint, load_public_key
    from mlspec.edge.verify import PUBLIC_KEY, read_package

    key = _trusted(public_key, pin, bundled)
    try:
        if bundled:
            files = read_package(package)
            if PUBLIC_KEY in files:
                shown = fingerprint(load_public_key(files[PUBLIC_KEY], PUBLIC_KEY))
                click.echo(BUNDLED_WARNING.format(fingerprint=shown), err=True)
        return verify_package(package, key, fingerprint_pin=pin, trust_bundled_key=bundled)
    except SigningKeyError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None
    except PackageInvalidError as exc:
        click.echo(f"✗ {package} is not a valid edge package: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_FINDINGS) from None


def _summary(manifest: Manifest) -> str:
    data = manifest.data
    model = data["model"]
    quantization = data["quantization"]["method"]
    files = ", ".join(sorted(data["files"]))
    line = (
        f"✓ {manifest.source}: deployment {data['deployment']} ({data['environment']}), {model['name']} "
        f"v{model['version']} ({'int8' if quantization == 'int8' else 'not quantized'}), built {data['created_at']}; "
        f"signature by {manifest.signer} holds; {files} match their sha256"
    )
    accuracy = data.get("accuracy") or {}
    if accuracy.get("checked"):
        line += (
            f"\n  accuracy: largest drop {accuracy['max_drop']:.4f} ({accuracy['worst_metric']}) "
            f"<= {accuracy['allowed_drop']:g} on {accuracy['split']['rows']} test rows"
        )
    perf = data.get("performance") or {}
    for which in ("full", "quantized"):
        if which in perf:
            p = perf[which]
            line += (
                f"\n  {which}: {p['bytes']} bytes, single row p50 {p['single_row_p50_ms']} ms / "
                f"p99 {p['single_row_p99_ms']} ms, {p['batch_rows_per_s']:.0f} rows/s in batches of {p['batch_rows']}"
            )
    return line


@edge.command()
@click.argument("package", type=click.Path(path_type=Path, exists=True))
@trust_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def verify(package: Path, public_key: Path | None, pin: str | None, trust_bundled_key: bool, fmt: str) -> int:
    """Verify PACKAGE (a folder or .tar.gz): signature by the trusted key, every file's sha256, nothing extra.

    Exit 0 when it verifies, 1 when it does not, 2 on a usage error.
    """
    manifest = _verify(package, public_key, pin, trust_bundled_key)
    if fmt == "json":
        click.echo(json.dumps({"valid": True, "signer": manifest.signer, "manifest": manifest.data}, indent=2))
    else:
        click.echo(_summary(manifest))
    return EXIT_OK


def _read_input(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise click.UsageError(f"cannot read the input {text[1:]}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"--input is not JSON: {exc}") from None


@edge.command()
@click.argument("package", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--input",
    "input_",
    required=True,
    metavar="JSON",
    help='Rows: {"feature": value, ...}, a list of those, or lists of values in column order; @FILE or - (stdin).',
)
@trust_options
def run(package: Path, input_: str, public_key: Path | None, pin: str | None, trust_bundled_key: bool) -> int:
    """Verify PACKAGE, then run its model with onnxruntime on the --input rows and print the outputs as JSON."""
    from mlspec.edge.errors import EdgeError
    from mlspec.edge.runner import rows_from_json
    from mlspec.edge.runner import run as run_model

    data = _read_input(input_)
    manifest = _verify(package, public_key, pin, trust_bundled_key)
    try:
        rows = rows_from_json(data, manifest)
    except EdgeError as exc:  # the input does not fit the package's schema
        click.echo(f"error: --input: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None
    try:
        outputs = run_model(manifest, rows)
    except EdgeError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_FINDINGS) from None
    model = manifest.model
    result = {"deployment": manifest.deployment, "model": model["name"], "version": model["version"]}
    click.echo(json.dumps({**result, "outputs": outputs}))
    return EXIT_OK


@edge.command()
@click.argument("deployment")
@click.option("--env", "env", required=True, help="A local environment.")
@PROJECT_OPTION
def build(deployment: str, env: str, path: Path | None) -> int:
    """Build (or reuse) the signed package of an edge DEPLOYMENT in a local environment now.

    The registered model the Deployment names is verified, quantized and checked when the spec asks, signed and
    written under <data_dir>/edge/<deployment>/. The next apply records it in state (and reuses it).
    """
    from mlspec.errors import MlspecError, UsageError
    from mlspec.project import Project
    from mlspec.render.monitoring import service_features
    from mlspec.resolve.refs import SpecIndex
    from mlspec.spec.deployment import Deployment, EdgeDeploymentSpec
    from mlspec.targets.base import TargetError

    project = Project.open(path or Path.cwd())
    resolution = project.resolve(env)
    graph = resolution.graph
    if graph is None or not resolution.ok:
        raise MlspecError(f"environment '{env}' does not resolve", hint="run 'mlspec check' to see why")
    from mlspec.apply.workflow import local_paths, runs_engines, state_store

    if not runs_engines(graph):
        raise UsageError(
            f"'{env}' is not a local environment: its edge packages are built by CI from edge/{deployment}.json",
            hint="render it with 'mlspec render --env ENV --target edge'",
        )
    spec = graph.find(Deployment, deployment)
    if spec is None:
        names = [s.name for s in graph.of_kind("Deployment")]
        raise UsageError(f"no Deployment '{deployment}' in '{env}'", hint=f"one of: {', '.join(names) or 'none'}")
    if not isinstance(spec.model.spec, EdgeDeploymentSpec):
        raise UsageError(f"Deployment '{deployment}' is mode: {spec.model.spec.mode}, not edge")
    pipeline = SpecIndex(graph.resources.values()).models.get(spec.model.spec.model.name)
    trainer = pipeline.model if pipeline is not None else None
    service = spec.model.spec.features or (trainer.spec.features if trainer else None)
    features = [{"name": f["name"], "dtype": f["dtype"]} for f in service_features(graph, service)] if service else None

    from mlspec.targets.local.edge import EdgeEngine
    from mlspec.targets.local.platform import LocalPlatform, expected_hashes

    paths = local_paths(project, graph)
    if not (paths.mlflow / "mlflow.db").is_file():
        raise MlspecError(f"nothing is registered in '{env}' yet", hint=f"run 'mlspec apply --env {env}' first")
    applied = state_store(project).read(env).resources
    expected = expected_hashes(applied).get(spec.model.spec.model.name, {})
    engine = EdgeEngine(paths, LocalPlatform(paths).registry)
    try:
        ids = engine.build(spec.model, trainer, expected, features=features or None, progress=click.echo)
    except TargetError as exc:
        click.echo(f"✗ {exc}", err=True)
        return EXIT_FINDINGS
    click.echo(
        f"✓ {deployment}: {ids['model']} v{ids['model_version']} -> {ids['package']} and {ids['tarball']} "
        f"({ids['size_bytes']} bytes, {'int8' if ids['quantized'] == 'true' else 'not quantized'}); "
        f"signed by {ids['signer']}"
    )
    return EXIT_OK
