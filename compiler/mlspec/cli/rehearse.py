"""``mlspec rehearse``: run an environment's cluster pipelines and Jobs in local containers before merging."""

from __future__ import annotations

from pathlib import Path

import click

from mlspec.cli.options import PROJECT_OPTION, environment, format_option, open_project
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


@commands.command()
@click.option("--env", "env", help="The environment to rehearse (a GitOps cluster with Kubeflow pipelines).")
@click.option(
    "--azure",
    envvar="MLSPEC_REHEARSE_AZURE",
    metavar="CONNECTION_STRING",
    help="Azure Storage emulator (Azurite) connection string; env MLSPEC_REHEARSE_AZURE.",
)
@click.option(
    "--s3",
    envvar="MLSPEC_REHEARSE_S3",
    metavar="URL",
    help="S3 server endpoint (moto, MinIO) on loopback; env MLSPEC_REHEARSE_S3.",
)
@click.option(
    "--redis",
    envvar="MLSPEC_REHEARSE_REDIS",
    metavar="HOST:PORT",
    help="Redis for Feast's online store; env MLSPEC_REHEARSE_REDIS.",
)
@click.option(
    "--postgres",
    envvar="MLSPEC_REHEARSE_POSTGRES",
    metavar="URL",
    help="PostgreSQL for warehouse tables (batch sinks); env MLSPEC_REHEARSE_POSTGRES.",
)
@click.option(
    "--ca-file",
    envvar="MLSPEC_REHEARSE_CA_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA bundle the stand-ins' TLS certificates chain to; env MLSPEC_REHEARSE_CA_FILE.",
)
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    metavar="NAME",
    help="Only this training pipeline (repeat for several); skips batch scoring and materialization.",
)
@click.option(
    "--sample-env",
    default="local",
    show_default=True,
    help="The environment whose data files stand in for the rehearsed environment's sources.",
)
@format_option(["text", "json"])
@PROJECT_OPTION
def rehearse(  # noqa: PLR0917  (one parameter per option)
    env: str | None, azure: str | None, s3: str | None, redis: str | None, postgres: str | None,
    ca_file: Path | None, pipelines: tuple[str, ...], sample_env: str, fmt: str, path: Path | None,
) -> int:  # fmt: skip
    """Run what Argo CD would run for an environment, in local containers, against stand-in stores.

    Feast's apply Job, every training pipeline exactly as compiled (with the parameters its hook passes),
    the batch pipelines and materialization run in the environment's runtime image, with the sample
    environment's data put where its offline store reads. MLflow becomes a SQLite file; object storage,
    Redis and PostgreSQL are the stand-ins you pass, which must be on this machine. Exit 1 when a step fails.
    """
    from mlspec.app.options import RehearsalOptions
    from mlspec.views.rehearsal import LOG_TAIL_LINES, rehearsal_json, rehearsal_text

    project = open_project(path)
    name = environment(project, env)
    options = RehearsalOptions(azure, s3, redis, postgres, str(ca_file) if ca_file else None)
    say = (lambda message: click.echo(f"… {message}", err=True)) if fmt == "text" else (lambda _: None)
    report = project.rehearse(name, options, pipelines=pipelines, sample_env=sample_env, progress=say)
    if fmt == "json":
        click.echo(rehearsal_json(report))
    else:
        failed = next((step for step in report.steps if not step.ok), None)
        tail = ""
        if failed is not None:
            lines = Path(failed.log).read_text(encoding="utf-8", errors="replace").splitlines()
            tail = "\n".join("    " + line for line in lines[-LOG_TAIL_LINES:])
        click.echo(rehearsal_text(report, tail))
    return EXIT_OK if report.ok else EXIT_FINDINGS
