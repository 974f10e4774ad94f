"""GitOps commands (registered on the main CLI): the pull-based reconciler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""


def _seconds(value: str | None) -> float | None:
    """``--interval``: plain seconds (``5``, ``0.5``) or a duration (``30s``, ``5m``)."""
    from mlspec.errors import UsageError

    if value is None:
        return None
    from mlspec.app.tools import duration_seconds

    try:
        seconds = duration_seconds(value)
    except ValueError:
        raise UsageError(f"--interval {value!r} is not a number of seconds or a duration like 30s") from None
    if seconds <= 0:
        raise UsageError("--interval must be positive")
    return seconds


@commands.command()
@click.option("--env", "env", required=True, help="Environment to keep in sync.")
@click.option("--repo", "repo", required=True, help="Git URL or local path of the platform repository.")
@click.option("--branch", "branch", default="main", show_default=True, help="Branch whose commits are applied.")
@click.option("--interval", "interval", help="Seconds (or 30s, 5m) between cycles (default: spec.reconcile.interval).")
@click.option("--once", is_flag=True, help="One cycle, then exit: 0 in sync, 1 refused, failed or drifted.")
@click.option(
    "--workdir", type=click.Path(path_type=Path), help="Clone and status folder (default .mlspec/reconcile/ENV)."
)
@click.option("--as", "who", help="Who the audit log names (default: MLSPEC_ACTOR or mlspec-reconcile@HOST).")
@click.option("--allow-destroy", is_flag=True, help="Allow commits that delete production Deployments.")
@click.option("-v", "--verbose", is_flag=True, help="Also print each resource as it is applied.")
def reconcile(
    *,
    env: str,
    repo: str,
    branch: str,
    interval: str | None,
    once: bool,
    workdir: Path | None,
    who: str | None,
    allow_destroy: bool,
    verbose: bool,
) -> int:
    """Pull-based GitOps: apply each new commit of a branch to an environment, and keep it there.

    Every cycle fetches the branch; a new commit is checked (signature where the
    environment requires it, validation, policies) and applied, or refused with the
    reason and never retried; between commits drift is repaired (or only reported,
    per spec.reconcile.self_heal). SIGTERM/SIGINT stop it between steps.
    """
    import signal

    from mlspec.gitops.reconcile import Reconciler, StopFlag

    stop = StopFlag()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop.is_set():
            click.echo(f"{signal.Signals(signum).name}: stopping after the current step", err=True)
        stop.set()

    reconciler = Reconciler(
        env, repo, branch, workdir or Path(".mlspec") / "reconcile" / env, interval=_seconds(interval),
        actor=who, allow_destroy=allow_destroy, progress=click.echo if verbose else (lambda _: None),
    )  # fmt: skip
    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(reconciler, stop, once=once)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(reconciler: Any, stop: Any, *, once: bool) -> int:
    from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK
    from mlspec.gitops.reconcile import Event

    env, branch = reconciler.environment, reconciler.branch

    def show(event: Event) -> None:
        click.echo(event.message)

    if not once:
        click.echo(f"reconciling '{env}' from {reconciler.repo} ({branch}) in {reconciler.workdir}")
        reconciler.run(stop, on_event=show)
        click.echo("stopped")
        return EXIT_OK
    result = reconciler.cycle(stop)
    for event in result.events:
        show(event)
    status = reconciler.status()
    at = status.applied[:12] if status.applied else "nothing applied"
    if result.in_sync:
        click.echo(f"'{env}' in sync with {branch} at {at}")
        return EXIT_OK
    if result.refused:
        why = f": {status.refused_reason}" if not any(e.kind == "refused" for e in result.events) else ""
        click.echo(f"'{env}' stays at {at}; {branch} is at refused commit {result.refused[:12]}{why}")
    elif result.drifted:
        click.echo(f"'{env}' at {at}: {len(result.drifted)} resource(s) drifted: {', '.join(result.drifted)}")
    elif result.failed:
        click.echo(f"'{env}' at {at}: {status.last_error or 'the cycle failed'}; retried on the next cycle")
    return EXIT_FINDINGS
