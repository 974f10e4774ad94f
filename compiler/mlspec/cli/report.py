"""Report and diagnosis commands (registered on the main CLI): ``report compliance`` and ``doctor``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from mlspec.cli.options import PROJECT_OPTION, env_option, format_option
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


@commands.group()
def report() -> None:
    """Reports about a project's environments."""


@report.command()
@env_option("report on")
@click.option(
    "--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True, help="Output format."
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report to a file instead of stdout.")
@click.option(
    "--today",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Judge waiver expiry on this date (YYYY-MM-DD) and print it; default: today, not printed.",
)
@PROJECT_OPTION
def compliance(*, env: str | None, fmt: str, output: Path | None, today: dt.datetime | None, path: Path | None) -> int:
    """Compliance of confidential and pii data in one environment.

    For every resource that holds or derives from such data: its lineage, the regions
    and encryption at each hop, the policies passed and failed, and the waivers in force.
    Exit 1 when any row fails: a hop outside the data residency or not encrypted at rest or in
    transit as enforced, or an un-waived deny (failing rows come first).
    """
    from mlspec.cli.options import environment, open_project
    from mlspec.report.views import render_html, render_json, render_markdown

    project = open_project(path)
    env = environment(project, env)
    result = project.compliance(env, today=today.date() if today else None, show_date=today is not None)
    text = {"md": render_markdown, "json": render_json, "html": render_html}[fmt](result)
    if output is not None:
        from mlspec.atomic import atomic_write

        atomic_write(output, text.encode("utf-8"))
        click.echo(f"wrote {output} ({'compliant' if result.ok else 'not compliant'})")
    else:
        click.echo(text, nl=False)
    return EXIT_OK if result.ok else EXIT_FINDINGS


@commands.command()
@format_option(["text", "json"])
@PROJECT_OPTION
def doctor(*, fmt: str, path: Path | None) -> int:
    """Installed versions of the engines mlspec drives, known-incompatible combinations, and (inside a project)
    where its state and audit trail could be lost.

    Reads package metadata only (nothing heavy is imported). Exit 1 when an
    incompatibility is found; a missing engine is reported with the extra that provides it.
    """
    import dataclasses

    from mlspec.app.doctoring import project_durability_warnings
    from mlspec.doctor import diagnose, render_json, render_text

    result = dataclasses.replace(diagnose(), warnings=tuple(project_durability_warnings(path)))
    click.echo(render_json(result) if fmt == "json" else render_text(result), nl=False)
    return EXIT_OK if result.ok else EXIT_FINDINGS
