"""Container image commands (registered on the main CLI): ``image build``."""

from __future__ import annotations

from pathlib import Path

import click

from mlspec.cli.options import PROJECT_OPTION, open_project
from mlspec.exit_codes import EXIT_OK


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


@commands.group()
def image() -> None:
    """The container images clusters run: the runtime (pipelines, Feast jobs) and the serving image."""


@image.command("build")
@click.option("--push", metavar="REGISTRY", help="Push to REGISTRY (e.g. registry.example.com/ml) and record it.")
@click.option(
    "--base-image", metavar="IMAGE", help="The image both are built on (a Python 3.11); default python:3.11-slim."
)
@click.option(
    "--torch", "torch_variant", default="cpu", show_default=True, metavar="VARIANT",
    help="The torch build of the runtime image: cpu, or a CUDA one such as cu128 (its wheel must be installable).",
)  # fmt: skip
@PROJECT_OPTION
def build(push: str | None, base_image: str | None, torch_variant: str, path: Path | None) -> int:
    """Build the runtime and serving images from docker/, tagged by content (an unchanged build is a no-op).

    Writes each image's CycloneDX SBOM to images/sbom/ and records the images (name, tag, digest, size) in
    images.lock.json, which renders read to name images by digest; commit both after a --push.
    """
    project = open_project(path)
    built = project.build_images(push=push, base_image=base_image, torch_variant=torch_variant)
    for item in built:
        image = item.image
        state = "cached" if item.cached else "built"
        size = image.size / 1e6
        click.echo(f"{image.name}:{image.tag}  {state} in {item.seconds:.1f}s  {size:.0f} MB  {image.reference}")
        click.echo(f"  sbom: {image.sbom}")
    return EXIT_OK
