"""GitOps commands (registered on the main CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlspec.cli.options import PROJECT_OPTION
from mlspec.exit_codes import EXIT_OK


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


def _show(value: Any) -> str:
    from mlspec.gitops.promote import flow

    return "(unset)" if value is None else flow(value)


@commands.command()
@click.argument("names", nargs=-1)
@click.option("--from", "source", help="Environment to promote from (default: the target's promotion.from).")
@click.option("--to", "target", required=True, help="Environment to promote to.")
@click.option("--branch", help="Name of the new branch (default: promote/<from>-to-<to>-<short sha>).")
@click.option("--commit", "on_current", is_flag=True, help="Commit on the current branch instead of a new one.")
@click.option("--no-pin", is_flag=True, help="Do not pin the model versions the source environment serves.")
@PROJECT_OPTION
def promote(
    *,
    names: tuple[str, ...],
    source: str | None,
    target: str,
    branch: str | None,
    on_current: bool,
    no_pin: bool,
    path: Path | None,
) -> int:
    """Propose that --to runs what --from runs, as one git commit.

    For each resource NAMES (NAME or Kind/NAME; default: every one that differs),
    the promotable fields of its resolved spec in --from (model, hyperparameters,
    evaluation, features, rollout, monitoring...) become an override in --to's
    environment file; environment-bound fields (resources, GPUs, scaling,
    schedules, endpoints, auth) are never copied. A Deployment's model version is
    pinned to the one --from's state says it serves. The commit goes on a new
    branch (the working tree is not touched) or, with --commit, on the current
    branch. Refuses a dirty working tree. Exit 0, also when there is nothing to promote.
    """
    from mlspec.cli.options import open_project
    from mlspec.gitops.promote import promote as run_promotion

    project = open_project(path)
    result = run_promotion(
        project, target, source=source, names=names, branch=branch, on_current=on_current, pin=not no_pin
    )
    click.echo(f"promote {result.source} -> {result.target} (specs at {result.base_commit[:12]})")
    for note in result.notes:
        click.echo(f"  note: {note}")
    if result.nothing:
        click.echo(f"✓ nothing to promote: {result.target} already runs what {result.source} runs")
        _print_kept(result.kept)
        return EXIT_OK
    for resource in result.resources:
        pinned = (
            f" (model version {resource.pinned_version}, served in {result.source})" if resource.pinned_version else ""
        )
        click.echo(f"  {resource.ref}{pinned}")
        for change in resource.changes:
            click.echo(f"      {change.path}: {_show(change.before)} -> {_show(change.after)}")
    _print_kept(result.kept)
    short = result.commit[:12]
    if result.on_new_branch:
        click.echo(f"✓ committed {short} on new branch {result.branch} ({result.file}); your working tree is untouched")
        click.echo(f"next: git push -u origin {result.branch}, then open a pull request into your main branch;")
    else:
        click.echo(f"✓ committed {short} on {result.branch} ({result.file})")
        click.echo(f"next: git push, or open a pull request from {result.branch};")
    approval = " and waits for the approval its GitHub environment requires" if result.requires_approval else ""
    click.echo(
        f"      CI posts the plan for {result.target} on the pull request; after the merge, "
        f"the apply to {result.target} runs{approval}"
    )
    return EXIT_OK


def _print_kept(kept: tuple[tuple[str, str], ...]) -> None:
    if not kept:
        return
    click.echo("  environment-bound differences, not promoted:")
    for ref, key in kept:
        click.echo(f"      {ref}: spec.{key}")
