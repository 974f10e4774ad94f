"""Commands on a running local platform: status, monitor, score, destroy (registered on the main CLI)."""

from __future__ import annotations

from pathlib import Path

import click

from mlspec.cli.lifecycle import approver, report_apply
from mlspec.cli.options import PROJECT_OPTION, env_option, environment, format_option, open_project, terminal_style
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK


@click.group()
def platform() -> None:
    """Holder for the platform commands; each is added to the main CLI."""


@platform.command()
@env_option("show (a local environment)")
@format_option(["text", "json"])
@PROJECT_OPTION
def status(env: str | None, fmt: str, path: Path | None) -> int:
    """Endpoints, model versions, traffic weights and health of a local environment."""
    from mlspec.views.platform_text import render_status_text, status_json

    project = open_project(path)
    result = project.status(environment(project, env))
    if fmt == "json":
        click.echo(status_json(result))
    else:
        style = terminal_style()
        click.echo(render_status_text(result, style), color=style.enabled)
    down = [s.deployment for s in result.servers if not s.ready]
    down += [job["deployment"] for job in result.batch if not job.get("last_run")]
    down += [package["deployment"] for package in result.edge if not package.get("signature_ok")]
    return EXIT_FINDINGS if down else EXIT_OK


@platform.command()
@env_option("monitor")
@PROJECT_OPTION
def monitor(env: str | None, path: Path | None) -> int:
    """Check served traffic for drift once (Evidently); retrain and roll out again where the spec says so; run the
    batch Deployments whose schedule (UTC cron) fired since their last run. On a cluster environment, copy what its
    rollout controllers decided (canary steps, promotions, rollbacks) into the audit log.

    Exits 1 when drift was found or a scheduled batch run failed.
    """
    from mlspec.views.platform_text import render_monitor_text

    project = open_project(path)
    outcomes = project.monitor(environment(project, env), progress=click.echo)
    style = terminal_style()
    click.echo(render_monitor_text(outcomes, style), color=style.enabled)
    return EXIT_FINDINGS if any(o.drifted or o.failed for o in outcomes) else EXIT_OK


@platform.command()
@click.argument("deployment")
@env_option("score in (a local environment)")
@format_option(["text", "json"])
@PROJECT_OPTION
def score(deployment: str, env: str | None, fmt: str, path: Path | None) -> int:
    """Run an applied batch DEPLOYMENT now: score its entities into its sink (the KFP local runner).

    Exits 1 when the run failed, 2 when DEPLOYMENT is unknown, not mode: batch, or not applied.
    """
    import json

    project = open_project(path)
    summary = project.score(environment(project, env), deployment, progress=click.echo)
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
@click.argument("deployment")
@env_option("call (a local environment)")
@click.option("--subject", default="mlspec", show_default=True, help="Who the token says is calling.")
@click.option("--ttl", type=click.IntRange(1, 86400), default=900, show_default=True, help="Token lifetime, seconds.")
@PROJECT_OPTION
def token(deployment: str, env: str | None, subject: str, ttl: int, path: Path | None) -> int:
    """Print the header that authenticates a call to DEPLOYMENT's local endpoint: a token of the environment's
    local OIDC issuer, or its API key; for example: curl -H "$(mlspec token fraud-api)" ...

    Prints nothing when the Deployment's auth is off.
    """
    project = open_project(path)
    for name, value in project.caller_headers(
        environment(project, env), deployment, subject=subject, ttl_seconds=ttl
    ).items():
        click.echo(f"{name}: {value}")
    return EXIT_OK


@platform.command()
@env_option("tear down")
@click.option("--auto-approve", is_flag=True, help="Destroy without asking.")
@click.option("--allow-destroy", is_flag=True, help="Needed for production environments.")
@click.option("--as", "who", help="Who is destroying (default: git user or login).")
@PROJECT_OPTION
def destroy(env: str | None, auto_approve: bool, allow_destroy: bool, who: str | None, path: Path | None) -> int:
    """Delete everything applied in an environment: servers stop, artifacts go (registered models stay)."""
    from mlspec.app.options import DestroyOptions

    project = open_project(path)
    env = environment(project, env)
    style = terminal_style()
    approve = approver(style, auto_approve, f"Destroy everything in '{env}'?", "destroy")
    options = DestroyOptions(allow_destroy=allow_destroy, who=who)
    plan, applied = project.destroy(env, options, approve=approve, progress=click.echo)
    if applied is None:
        click.echo("Nothing to destroy." if plan is None or plan.empty else "Destroy cancelled.")
        return EXIT_OK
    return report_apply(applied, style)
