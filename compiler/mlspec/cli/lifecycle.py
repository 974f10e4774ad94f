"""The lifecycle commands: plan, apply, diff, rollback, state and audit (registered on the main CLI)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mlspec.cli.options import PROJECT_OPTION, env_option, environment, format_option, open_project, terminal_style
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_OK


@click.group()
def lifecycle() -> None:
    """Holder for the lifecycle commands; each is added to the main CLI."""


def _print_problems(diagnostics: Any, findings: Any) -> None:
    from mlspec.views.diagnostics_text import render_diagnostics
    from mlspec.views.findings_text import render_findings_text

    style = terminal_style()
    if diagnostics:
        click.echo(render_diagnostics(diagnostics, style), color=style.enabled)
    blocking = [f for f in findings if f.blocking]
    if blocking:
        click.echo(render_findings_text(blocking, style), color=style.enabled)


@lifecycle.command()
@env_option("plan")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Save the plan (JSON) for 'mlspec apply PLAN'.")
@format_option(["text", "markdown", "json"])
@click.option("--no-prune", is_flag=True, help="Keep resources that were removed from the specs.")
@click.option("--refresh", is_flag=True, help="Read live state first; drifted resources are planned as updates.")
@click.option(
    "--changed-since",
    "changed_since",
    metavar="REF",
    help="Show only the resources this branch changes since its merge base with the git REF (and their dependants).",
)
@click.option("--as", "who", help="Who is planning (default: git user or login); environments may restrict it.")
@PROJECT_OPTION
def plan(
    *,
    env: str | None,
    out: Path | None,
    fmt: str,
    no_prune: bool,
    refresh: bool,
    changed_since: str | None,
    who: str | None,
    path: Path | None,
) -> int:
    """Show what applying would change in an environment, why, and what the policies say about it.

    Exit 1 when apply would refuse the plan: an un-waived deny or an expired waiver.
    """
    from mlspec.app.options import PlanOptions
    from mlspec.app.planning import plan_session

    project = open_project(path)
    env = environment(project, env)
    changes = None
    if changed_since is not None:
        from mlspec.errors import UsageError
        from mlspec.gitops.changes import changed_files

        if out is not None:
            raise UsageError("--out saves a whole plan for apply; run plan without --changed-since to save one")
        changes = changed_files(project, changed_since)
        project = project.governed_by(changes.base)  # planned under the base's checks, never its own
        if not changes.relevant and fmt != "json":
            click.echo(changes.nothing_line())
            return EXIT_OK
    with project.session(env) as session:
        result = plan_session(session, PlanOptions(prune=not no_prune, refresh=refresh, who=who))
        if result.plan is None:
            _print_problems(result.diagnostics, result.findings)
            return EXIT_FINDINGS
        if changes is not None:
            from mlspec.gitops.changes import affected, filter_plan

            refs = affected(result.graph, changes) if result.graph is not None else frozenset()
            result = filter_plan(result, refs)
            if not refs and fmt != "json":
                click.echo(changes.nothing_line(env))
                return EXIT_OK
            if fmt == "text":
                click.echo(changes.scope_line(len(refs), env))
        _show_plan(session, result, fmt)
    assert result.plan is not None
    if out is not None:
        from mlspec.atomic import atomic_write
        from mlspec.views.plan import render_plan_json

        atomic_write(out, render_plan_json(result.plan).encode() + b"\n")
        click.echo(f"saved plan to {out}; apply exactly it with: mlspec apply {out}")
    return EXIT_FINDINGS if result.blocking else EXIT_OK


def _show_plan(session: Any, result: Any, fmt: str) -> None:
    from mlspec.views import plan as views

    if fmt == "json":
        click.echo(views.render_plan_json(result.plan))
    elif fmt == "markdown":
        click.echo(views.render_plan_markdown(result.plan))
    else:
        style = terminal_style()
        click.echo(views.render_plan_text(result.plan, style), color=style.enabled)
        _print_engine_steps(session, result)


def approver(style: Any, auto_approve: bool, question: str, verb: str) -> Callable[[Any], bool]:
    """Show the plan, then go ahead when approved in advance, or ask on a terminal (refuse off one)."""
    from mlspec.errors import UsageError
    from mlspec.views.plan import render_plan_text

    def approve(plan: Any) -> bool:
        click.echo(render_plan_text(plan, style), color=style.enabled)
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            raise UsageError(f"not a terminal: pass --auto-approve to {verb} without confirmation")
        return bool(click.confirm(question, default=False))

    return approve


def _print_engine_steps(session: Any, result: Any) -> None:
    from mlspec.app.planning import engine_steps

    steps = engine_steps(session, result)
    if steps:
        click.echo("On this machine, applying will also:")
        for ref, lines in steps.items():
            for line in lines:
                click.echo(f"  {ref}: {line}")


@lifecycle.command()
@env_option("log in to")
@PROJECT_OPTION
def login(env: str | None, path: Path | None) -> int:
    """Prove who you are to the environment's identity provider (device code: open the URL, enter the code);
    plan and apply then act as the verified person, outside the local tier where a typed name proves nothing."""
    project = open_project(path)
    who = project.login(environment(project, env), show=click.echo)
    click.echo(f"logged in as {who.name} ({who.evidence.get('issuer', '')}); the login holds until the token expires")
    return EXIT_OK


@lifecycle.command()
@click.argument("plan_file", required=False, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--env", "env", help="Environment to apply (not needed with a saved plan).")
@click.option("--auto-approve", is_flag=True, help="Apply without asking.")
@click.option("--no-prune", is_flag=True, help="Keep resources that were removed from the specs.")
@click.option("--refresh", is_flag=True, help="Read live state first and repair drift.")
@click.option("--allow-destroy", is_flag=True, help="Allow deleting production Deployments.")
@click.option("--lock-timeout", type=float, default=0.0, show_default=True, help="Seconds to wait for the lock.")
@click.option("--as", "who", help="Who is applying (default: git user or login).")
@click.option(
    "--artifacts-only", is_flag=True, help="On a local environment: write artifacts and state, run no engines."
)
@click.option("--allow-dirty", is_flag=True, help="Apply to a non-local environment from uncommitted changes.")
@click.option(
    "--direct",
    is_flag=True,
    help="Also apply to the environment's cluster (server-side apply, KFP, MLflow) instead of leaving it to GitOps.",
)
@PROJECT_OPTION
def apply(
    *,
    plan_file: Path | None,
    env: str | None,
    auto_approve: bool,
    no_prune: bool,
    refresh: bool,
    allow_destroy: bool,
    lock_timeout: float,
    who: str | None,
    artifacts_only: bool,
    allow_dirty: bool,
    direct: bool,
    path: Path | None,
) -> int:
    """Apply the specs (or exactly a saved plan) to an environment, one resource at a time."""

    from mlspec.app.options import ApplyOptions, PlanOptions
    from mlspec.app.planning import read_saved_plan
    from mlspec.errors import UsageError

    saved = read_saved_plan(plan_file) if plan_file is not None else None
    if saved is not None:
        env = env or saved.environment
    project = open_project(path)
    env = project.environment_or_default(env)
    if env is None:
        raise UsageError("name an environment with --env, or pass a saved plan")
    style = terminal_style()

    approve = approver(style, auto_approve or saved is not None, "Apply these changes?", "apply")
    options = ApplyOptions(
        plan=PlanOptions(prune=not no_prune, refresh=refresh, who=who), saved=saved, allow_destroy=allow_destroy,
        allow_dirty=allow_dirty, lock_timeout=lock_timeout, engines=not artifacts_only, direct=direct,
    )  # fmt: skip
    result, applied = project.apply(env, options, approve=approve, progress=click.echo)
    if result.plan is None:
        _print_problems(result.diagnostics, result.findings)
        return EXIT_FINDINGS
    if applied is None:
        click.echo("Nothing to apply." if result.plan.empty else "Apply cancelled.")
        return EXIT_OK
    return report_apply(applied, style)


def report_apply(applied: Any, style: Any) -> int:
    failed = [r for r in applied.results if r.status != "applied"]
    for r in failed:
        click.echo(
            style(f"✗ {r.ref}: {r.status}: {r.error}" + (f" ({r.location})" if r.location else ""), "red"),
            color=style.enabled,
        )
    done = sum(1 for r in applied.results if r.status == "applied")
    click.echo(
        f"Apply {'complete' if not failed else 'incomplete'}: {done} applied, {len(failed)} failed or skipped; "
        f"audit #{applied.audit.seq if applied.audit else '-'}"
    )
    return EXIT_OK if not failed else EXIT_FINDINGS


@lifecycle.command("diff")
@env_option("compare with its live target")
@PROJECT_OPTION
def diff_command(env: str | None, path: Path | None) -> int:
    """List drift: where the live target no longer matches what was applied."""
    project = open_project(path)
    report = project.drift(environment(project, env))
    for ref, changed in sorted(report.items()):
        click.echo(f"~ {ref}")
        for artifact, (applied, live) in sorted(changed.items()):
            click.echo(
                f"    {artifact}: "
                + ("missing" if live is None else f"changed ({applied[:12] if applied else '-'} -> {live[:12]})")
            )
    click.echo(f"{len(report)} resource(s) drifted" + ("; 'mlspec apply --refresh' repairs them" if report else ""))
    return EXIT_FINDINGS if report else EXIT_OK


@lifecycle.command()
@env_option("roll back")
@click.option("--to", "revision", required=True, help="Git revision whose specs to apply (commit, tag, branch).")
@click.option("--auto-approve", is_flag=True, help="Apply without asking.")
@click.option("--allow-destroy", is_flag=True, help="Allow deleting production Deployments.")
@PROJECT_OPTION
def rollback(*, env: str | None, revision: str, auto_approve: bool, allow_destroy: bool, path: Path | None) -> int:
    """Plan and apply the specs as they were at a git revision (state and audit are shared)."""
    from mlspec.app.options import ApplyOptions

    current = open_project(path)
    env = environment(current, env)
    style = terminal_style()
    approve = approver(style, auto_approve, f"Roll '{env}' back to {revision}?", "roll back")
    options = ApplyOptions(allow_destroy=allow_destroy)
    result, applied = current.rollback(env, revision, options, approve=approve, progress=click.echo)
    if result.plan is None:
        _print_problems(result.diagnostics, result.findings)
        return EXIT_FINDINGS
    if applied is None:
        click.echo("Nothing to roll back." if result.plan.empty else "Rollback cancelled.")
        return EXIT_OK
    click.echo(f"Rolled back to {revision}: " + ("complete" if applied.ok else "incomplete"))
    return EXIT_OK if applied.ok else EXIT_FINDINGS


def short_revision(revision: str) -> str:
    """A commit shortened to 12 characters, keeping any note after it (``abc123def456 rollback to v1``)."""
    head, _, rest = revision.partition(" ")
    commit, dirty, _ = head.partition("+dirty")
    return commit[:12] + (dirty and "+dirty") + (f" {rest}" if rest else "")


@lifecycle.group()
def state() -> None:
    """Inspect applied state and its locks."""


@state.command("list")
@click.option("--env", "env", help="Only this environment.")
@PROJECT_OPTION
def state_list(env: str | None, path: Path | None) -> int:
    """Every applied resource per environment, with when and by whom."""
    with open_project(path).state_store() as store:
        for name in [env] if env else store.environments():
            current = store.read(name)
            click.echo(f"{name} (serial {current.serial}, {len(current.resources)} resources)")
            for ref, resource in current.resources.items():
                click.echo(
                    f"  {ref:<45} {resource.fingerprint[:12]}  {resource.applied_at}  "
                    f"{resource.applied_by}  {short_revision(resource.revision)}"
                )
        for lock in store.locks():
            click.echo(
                f"lock: {lock.environment} held by {lock.holder} on {lock.host} pid {lock.pid} "
                f"since {lock.acquired_at} ({lock.operation})"
            )
    return EXIT_OK


@state.command("show")
@env_option("read")
@click.argument("ref")
@PROJECT_OPTION
def state_show(env: str | None, ref: str, path: Path | None) -> int:
    """One applied resource as JSON."""
    import json

    from mlspec.errors import UsageError

    project = open_project(path)
    env = environment(project, env)
    with project.state_store() as store:
        resource = store.read(env).resources.get(ref)
    if resource is None:
        raise UsageError(f"no applied resource {ref} in '{env}'")
    click.echo(json.dumps(resource.to_dict(), indent=2, sort_keys=True))
    return EXIT_OK


@state.command("unlock")
@env_option("unlock")
@PROJECT_OPTION
def state_unlock(env: str | None, path: Path | None) -> int:
    """Break an environment's lock (when its holder is gone)."""
    project = open_project(path)
    env = environment(project, env)
    with project.state_store() as store:
        lock = store.break_lock(env)
    if lock is None:
        click.echo(f"'{env}' was not locked")
    else:
        click.echo(f"removed the lock of {lock.holder} on {lock.host} (pid {lock.pid}, since {lock.acquired_at})")
    return EXIT_OK


@lifecycle.group()
def audit() -> None:
    """The append-only, hash-chained audit log of every apply."""


@audit.command("log")
@click.option("--env", "env", help="Only this environment.")
@PROJECT_OPTION
def audit_log(env: str | None, path: Path | None) -> int:
    """Every apply: when, who, which revision and plan, and each change's result."""
    with open_project(path).state_store() as store:
        for entry in store.audit(env):
            record = entry.record
            if record.get("type") == "change":
                click.echo(
                    f"#{entry.seq} {entry.at} {entry.environment} {record['action']:<6} {record['ref']} "
                    f"by {entry.actor} at {short_revision(entry.revision)}"
                )
                continue
            if record.get("type") != "apply":
                click.echo(_audit_event_line(entry))
                continue
            summary = record.get("summary", {})
            failed = [c for c in record.get("changes", []) if c["status"] != "applied"]
            click.echo(
                f"#{entry.seq} {entry.at} {entry.environment} apply by {entry.actor} "
                f"at {short_revision(entry.revision)} "
                f"plan {entry.plan_hash[:12]}: "
                f"+{summary.get('create', 0)} ~{summary.get('update', 0)} -{summary.get('delete', 0)}"
                + (f", {len(failed)} failed or skipped" if failed else "")
            )
            for change in failed:
                click.echo(f"    {change['action']:<6} {change['ref']}: {change['status']} ({change['error']})")
    return EXIT_OK


def _audit_event_line(entry: Any) -> str:
    """One line for a record that is not an apply: reconcile events, settled rollouts, monitoring, retrains."""
    record = entry.record
    kind = record.get("type", "event")
    head = f"#{entry.seq} {entry.at} {entry.environment} {kind}"
    if kind == "reconcile":
        detail = f"{record.get('event')}: {record.get('message', '')}"
    elif kind == "retrain":
        detail = f"{record.get('ref')} ({record.get('reason')}) -> v{record.get('target_ids', {}).get('model_version')}"
    elif kind == "monitor":
        drift = record.get("drift", {})
        detail = "; ".join(
            [f"{d}: {'drift' if v.get('detected') else 'no drift'}, action {v.get('action')}" for d, v in drift.items()]
            + list(record.get("events", []))
        )
    elif kind == "identity":
        detail = f"{record.get('name')} proven by {record.get('method')} for {record.get('operation')}"
    elif kind == "approval":
        who = ", ".join(str(a) for a in record.get("approved_by", []))
        detail = f"{record.get('method')} approval of {str(record.get('commit', ''))[:12]} by {who}"
    elif kind == "rollout" and record.get("source") == "cluster":
        detail = f"{record.get('deployment')}: " + "; ".join(
            f"{d.get('action')} v{d.get('version')} to {d.get('percent')}% ({d.get('reason')})"
            for d in record.get("decisions", [])
        )
    else:
        detail = "; ".join(str(e) for e in record.get("events", [])) or record.get("message", "")
    observed = f" (observed by {record['observed_by']})" if record.get("observed_by") else ""
    return f"{head} by {entry.actor}{observed} at {short_revision(entry.revision)}: {detail}"


@audit.command("export")
@env_option("export the audit trail of")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path), required=True, help="A new folder to write.")
@PROJECT_OPTION
def audit_export(env: str | None, out: Path, path: Path | None) -> int:
    """Write the verified audit log (JSON Lines), its signed checkpoints, the public keys and verify.py, a checker
    that needs only Python and the cryptography package. Exits 1 when the log does not verify (written anyway)."""
    project = open_project(path)
    result = project.export_audit(environment(project, env), out)
    for problem in result.problems:
        click.echo(f"✗ {problem}")
    verdict = "intact" if result.intact else f"{len(result.problems)} problem(s)"
    click.echo(f"wrote {out}: {result.count} audit record(s), {result.checkpoints} checkpoint(s), {verdict}")
    click.echo(f"an auditor checks it with: python {out / 'verify.py'}")
    return EXIT_OK if result.intact else EXIT_FINDINGS


@audit.command("live")
@env_option("show")
@click.option("--at", "at", help="ISO time, e.g. 2026-11-23T10:00:00+04:00 (default: now).")
@PROJECT_OPTION
def audit_live(env: str | None, at: str | None, path: Path | None) -> int:
    """What was live in an environment at a time: every resource, and the model each Deployment served."""
    import datetime as dt

    from mlspec.errors import UsageError

    project = open_project(path)
    env = environment(project, env)
    try:
        moment = dt.datetime.fromisoformat(at) if at else dt.datetime.now(dt.UTC)
    except ValueError:
        raise UsageError(f"--at {at!r} is not an ISO time", hint="e.g. 2026-11-23T10:00:00+04:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    with project.state_store() as store:
        until = [e for e in store.audit(env) if dt.datetime.fromisoformat(e.at) <= moment]
    applies = [e for e in until if e.record.get("type") == "apply"]
    # rollouts settled and retrains after the last apply change what serves, not what is applied
    serving: dict[str, str] = next((e.record["serving"] for e in reversed(until) if "serving" in e.record), {})
    if not applies:
        click.echo(f"nothing was applied to '{env}' by {moment.isoformat()}")
        return EXIT_OK
    entry = applies[-1]
    click.echo(
        f"{env} at {moment.isoformat()}: as applied by #{entry.seq} at {entry.at} by {entry.actor} "
        f"({short_revision(entry.revision)})"
    )
    for ref, model in sorted(serving.items()):
        click.echo(f"  {ref} served {model}")
    for ref, fingerprint in sorted(entry.record.get("live", {}).items()):
        click.echo(f"  {ref} {fingerprint[:12]}")
    return EXIT_OK


@audit.command("verify")
@PROJECT_OPTION
def audit_verify(path: Path | None) -> int:
    """Check the audit log against its hash chain and its signed checkpoints: an edited, removed or reordered
    record, a log cut short or rewritten from some record on, a forged checkpoint and an emptied or rolled-back
    state are reported (exit 1)."""
    result = open_project(path).verify_audit()
    for problem in result.problems:
        click.echo(f"✗ {problem}")
    for warning in result.warnings:
        click.echo(f"! {warning}")
    verdict = "intact" if result.intact else f"{len(result.problems)} problem(s)"
    click.echo(f"{result.count} audit record(s), {result.checkpoints} checkpoint(s): {verdict}")
    return EXIT_OK if result.intact else EXIT_FINDINGS
