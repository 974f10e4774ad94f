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

from mlspec.cli.options import PROJECT_OPTION, env_option, environment, format_option, open_project
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
@format_option(["text", "json"])
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
@env_option("build in (a local environment)")
@PROJECT_OPTION
def build(deployment: str, env: str | None, path: Path | None) -> int:
    """Build (or reuse) the signed package of an edge DEPLOYMENT in a local environment now.

    The registered model the Deployment names is verified, quantized and checked when the spec asks, signed and
    written under <data_dir>/edge/<deployment>/. The next apply records it in state (and reuses it).
    """
    from mlspec.app.edge import EdgeBuildFailed

    project = open_project(path)
    try:
        ids = project.build_edge(environment(project, env), deployment, progress=click.echo)
    except EdgeBuildFailed as exc:
        click.echo(f"✗ {exc}", err=True)
        return EXIT_FINDINGS
    click.echo(
        f"✓ {deployment}: {ids['model']} v{ids['model_version']} -> {ids['package']} and {ids['tarball']} "
        f"({ids['size_bytes']} bytes, {'int8' if ids['quantized'] == 'true' else 'not quantized'}); "
        f"signed by {ids['signer']}"
    )
    return EXIT_OK
