"""GitOps commands (registered on the main CLI)."""

from __future__ import annotations

from pathlib import Path

import click

from mlspec.cli.options import PROJECT_OPTION
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


@commands.command()
@click.option("--env", "envs", multiple=True, help="Environment to check and plan (repeat for several).")
@click.option("--all-envs", is_flag=True, help="Every environment of the project.")
@click.option(
    "--changed-since",
    "changed_since",
    metavar="REF",
    help="Only what this branch changes since its merge base with the git REF (and dependants).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the comment to a file instead of stdout.")
@PROJECT_OPTION
def comment(
    *, envs: tuple[str, ...], all_envs: bool, changed_since: str | None, output: Path | None, path: Path | None
) -> int:
    """A pull-request comment (markdown): check findings and each environment's plan.

    It starts with a hidden marker, <!-- mlspec:comment project=NAME -->, so CI can
    update its previous comment instead of posting another; the same inputs give the
    same bytes. Exit 1 when a blocking finding or an error exists (the comment is
    still written), 0 otherwise.
    """
    from mlspec.cli.options import open_project
    from mlspec.errors import UsageError
    from mlspec.gitops.changes import branch_report, changed_files
    from mlspec.views.comment import render_comment

    if not envs and not all_envs:
        raise UsageError("name the environments to plan: --env E (repeatable) or --all-envs")
    if envs and all_envs:
        raise UsageError("--env and --all-envs exclude each other")
    project = open_project(path)
    changes = changed_files(project, changed_since) if changed_since is not None else None
    if changes is not None:
        project = project.governed_by(changes.base)  # the base's checks, never the branch's own
    report = branch_report(project, None if all_envs else list(envs), changes)
    text = render_comment(report)
    ok = report.ok
    if output is not None:
        from mlspec.atomic import atomic_write

        atomic_write(output, text.encode("utf-8"))
        click.echo(f"wrote {output} ({'ok' if ok else 'blocking findings'})")
    else:
        click.echo(text, nl=False)
    return EXIT_OK if ok else EXIT_FINDINGS
