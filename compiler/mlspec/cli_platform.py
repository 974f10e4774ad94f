"""Commands on a running local platform: status, monitor, score, destroy (registered on the main CLI)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mlspec.cli_lifecycle import PROJECT_OPTION, _report_apply, approver
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK


@click.group()
def platform() -> None:
    """Holder for the platform commands; each is added to the main CLI."""


@platform.command()
@click.option("--env", "env", required=True, help="A local environment.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@PROJECT_OPTION
def status(env: str, fmt: str, path: Path | None) -> int:
    """Endpoints, model versions, traffic weights and health of a local environment."""
    from mlspec.project import Project
    from mlspec.targets.local.operations import status as platform_status
    from mlspec.views.platform_text import render_status_text, status_json
    from mlspec.views.style import Style, use_color

    result = platform_status(Project.open(path or Path.cwd()), env)
    if fmt == "json":
        click.echo(status_json(result))
    else:
        style = Style(use_color(sys.stdout, "auto"))
        click.echo(render_status_text(result, style), color=style.enabled)
    down = [s.deployment for s in result.servers if not s.ready]
    down += [job["deployment"] for job in result.batch if not job.get("last_run")]
    down += [package["deployment"] for package in result.edge if not package.get("signature_ok")]
    return EXIT_FINDINGS if down else EXIT_OK


@platform.command()
@click.option("--env", "env", required=True, help="A local environment.")
@PROJECT_OPTION
def monitor(env: str, path: Path | None) -> int:
    """Check served traffic for drift once (Evidently); retrain and roll out again where the spec says so; run the
    batch Deployments whose schedule (UTC cron) fired since their last run.

    Exits 1 when drift was found or a scheduled batch run failed.
    """
    from mlspec.project import Project
    from mlspec.targets.local.operations import monitor as run_monitor
    from mlspec.views.platform_text import render_monitor_text
    from mlspec.views.style import Style, use_color

    outcomes = run_monitor(Project.open(path or Path.cwd()), env, progress=click.echo)
    style = Style(use_color(sys.stdout, "auto"))
    click.echo(render_monitor_text(outcomes, style), color=style.enabled)
    return EXIT_FINDINGS if any(o.drifted or o.failed for o in outcomes) else EXIT_OK


@platform.command()
@click.argument("deployment")
@click.option("--env", "env", required=True, help="A local environment.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@PROJECT_OPTION
def score(deployment: str, env: str, fmt: str, path: Path | None) -> int:
    """Run an applied batch DEPLOYMENT now: score its entities into its sink (the KFP local runner).

    Exits 1 when the run failed, 2 when DEPLOYMENT is unknown, not mode: batch, or not applied.
    """
    import json

    from mlspec.project import Project
    from mlspec.targets.local.operations import score_now

    summary = score_now(Project.open(path or Path.cwd()), env, deployment, progress=click.echo)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return EXIT_OK
    missing = summary.get("missing_features", 0)
    click.echo(
        f"✓ {deployment}: {summary['rows']} rows scored with {summary['model']} v{summary['model_version']} "
        f"in {summary['seconds']} s ({summary.get('rows_per_second')} rows/s on {summary.get('device')}, "
        f"{summary['chunks']} chunk(s){f', {missing} without features' if missing else ''})"
    )
    click.echo(f"  -> {summary.get('location') or summary['sink']}  (run {summary['run_id']})")
    return EXIT_OK


@platform.command()
@click.option("--env", "env", required=True, help="Environment to tear down.")
@click.option("--auto-approve", is_flag=True, help="Destroy without asking.")
@click.option("--allow-destroy", is_flag=True, help="Needed for production environments.")
@click.option("--as", "who", help="Who is destroying (default: git user or login).")
@PROJECT_OPTION
def destroy(env: str, auto_approve: bool, allow_destroy: bool, who: str | None, path: Path | None) -> int:
    """Delete everything applied in an environment: servers stop, artifacts go (registered models stay)."""
    from mlspec.apply.workflow import destroy_environment
    from mlspec.project import Project
    from mlspec.views.style import Style, use_color

    style = Style(use_color(sys.stdout, "auto"))

    approve = approver(style, auto_approve, f"Destroy everything in '{env}'?", "destroy")

    plan, applied = destroy_environment(
        Project.open(path or Path.cwd()), env, allow_destroy=allow_destroy, who=who, approve=approve,
        progress=click.echo,
    )  # fmt: skip
    if applied is None:
        click.echo("Nothing to destroy." if plan is None or plan.empty else "Destroy cancelled.")
        return EXIT_OK
    return _report_apply(applied, style)
