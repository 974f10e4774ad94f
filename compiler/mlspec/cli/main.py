"""The mlspec command group and entry point, and the compile commands (validate, check, graph, render...).

Exit codes: 0 ok, 1 findings (or a failed apply), 2 usage error, 3 internal error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlspec import __version__
from mlspec.cli.options import PROJECT_OPTION, format_option
from mlspec.errors import MlspecError

if TYPE_CHECKING:
    from mlspec.app.validation import Resolution

from mlspec.cli.options import COLOR_OPTION, env_option, environment, open_project
from mlspec.exit_codes import EXIT_FINDINGS, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="mlspec")
def cli() -> None:
    """Declarative GitOps for ML platforms: validate, check, render, plan and apply specs."""


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "compact", "json"]),
    default="text",
    show_default=True,
    help="text: with source excerpts; compact: one line each; json: for machines.",
)
@COLOR_OPTION
def validate(paths: tuple[Path, ...], fmt: str, color: str) -> int:
    """Validate specs and report every problem at once.

    With no PATHS, validates the project whose mlspec.yaml is at or above the
    current folder. A folder holding mlspec.yaml is validated as that project;
    other files and folders are validated together on their own.
    """
    from mlspec.app.project import Project
    from mlspec.app.validation import ValidationResult, validate_paths
    from mlspec.views.diagnostics_json import render_json
    from mlspec.views.diagnostics_text import render_compact, render_diagnostics
    from mlspec.views.style import Style, use_color

    result: ValidationResult
    if not paths:
        result = Project.open(Path.cwd()).validate()
    elif len(paths) == 1 and paths[0].is_dir() and (paths[0] / "mlspec.yaml").is_file():
        result = Project.open(paths[0]).validate()
    else:
        result = validate_paths(paths)

    if fmt == "json":
        click.echo(render_json(result.diagnostics, files=result.files, specs=len(result.specs)))
        return EXIT_OK if result.ok else EXIT_FINDINGS
    style = Style(use_color(sys.stdout, color))
    if result.diagnostics:
        if fmt == "compact":
            click.echo(render_compact(result.diagnostics))
        else:
            click.echo(render_diagnostics(result.diagnostics, style), color=style.enabled)
            click.echo()
    errors = result.error_count
    warnings = len(result.diagnostics) - errors
    counted = f"{len(result.specs)} specs in {result.files} files"
    if errors:
        click.echo(style(f"✗ {errors} error(s), {warnings} warning(s) ({counted})", "red", "bold"), color=style.enabled)
        return EXIT_FINDINGS
    summary = style(f"✓ valid: {counted}", "green") + (f", {warnings} warning(s)" if warnings else "")
    click.echo(summary, color=style.enabled)
    return EXIT_OK


def _resolve_or_exit(path: Path | None, env: str | None, fmt_color: str = "auto") -> Resolution:
    """Resolve one environment, printing the problems and exiting 1 when there are any."""
    from mlspec.views.diagnostics_text import render_diagnostics
    from mlspec.views.style import Style, use_color

    project = open_project(path)
    resolution = project.resolve(environment(project, env))
    if not resolution.ok:
        style = Style(use_color(sys.stdout, fmt_color))
        click.echo(render_diagnostics(resolution.diagnostics, style), color=style.enabled)
        raise click.exceptions.Exit(EXIT_FINDINGS)
    return resolution


@cli.command()
@click.option("--env", "envs", multiple=True, help="Environment to check (repeat for several).")
@click.option("--all-envs", is_flag=True, help="Check every environment (the default when no --env is given).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "sarif", "junit", "github"]),
    default="text",
    show_default=True,
    help="sarif: GitHub code scanning; junit: CI test reports; github: Actions annotations.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the report to a file instead of stdout.")
@COLOR_OPTION
@click.option(
    "--changed-since",
    "changed_since",
    metavar="REF",
    help="Report only on the resources this branch changes since its merge base with the git REF (and dependants).",
)
@click.option(
    "--base",
    "base",
    metavar="REF",
    help="Judge by REF's policy settings, policy files and access rules (default in a GitHub pull request: "
    "origin/$GITHUB_BASE_REF); changing them is a deny. --changed-since implies it.",
)
@PROJECT_OPTION
def check(
    *,
    envs: tuple[str, ...],
    all_envs: bool,
    fmt: str,
    output: Path | None,
    color: str,
    changed_since: str | None,
    base: str | None,
    path: Path | None,
) -> int:
    """Validate, resolve and check every policy; report all findings at once.

    Exit 1 when any error or un-waived deny remains. Waived findings are reported
    as waived; expired waivers deny. With --changed-since, only the findings about
    what the branch changes are reported (exactly as a full check reports them).
    """
    from mlspec.app.governance import pull_request_base
    from mlspec.app.validation import CheckResult
    from mlspec.views.style import use_color

    project = open_project(path)
    selected = None if all_envs else (list(envs) or None)
    scope_line = ""
    base = base or (pull_request_base() if changed_since is None else None)
    if base is not None:
        project = project.governed_by(base)  # the base's checks, never the change's own
    if changed_since is None:
        result = project.check(selected)
    else:
        from mlspec.gitops.changes import changed_files, check_changed

        changes = changed_files(project, changed_since)
        project = project.governed_by(changes.base)  # checked by the base's checks, never its own
        if not changes.relevant:
            if fmt == "text" and output is None:
                click.echo(changes.nothing_line())
                return EXIT_OK
            scope_line = changes.nothing_line()
            if fmt != "text":
                click.echo(scope_line, err=True)
            result = CheckResult((), (), (), 0)
        else:
            result, scope = check_changed(project, changes, selected)
            reached = sum(len(refs) for refs in scope.values())
            scope_line = changes.scope_line(reached) + (f" across {len(scope)} environment(s)" if scope else "")
    report = _check_report(result, fmt, scope_line, color, output)
    if output is not None:
        output.write_text(report + "\n", encoding="utf-8")
        click.echo(f"wrote {output} ({'ok' if result.ok else 'findings'})")
    else:
        click.echo(report, color=fmt == "text" and use_color(sys.stdout, color))
    return EXIT_OK if result.ok else EXIT_FINDINGS


def _check_report(result: Any, fmt: str, scope_line: str, color: str, output: Path | None) -> str:
    """The check result in the chosen format."""
    from mlspec.views import findings_text as views
    from mlspec.views.diagnostics_text import render_diagnostics
    from mlspec.views.style import Style, use_color

    if fmt == "text":
        style = Style(use_color(sys.stdout, color) and output is None)
        parts = [scope_line] if scope_line else []
        if result.diagnostics:
            parts.append(render_diagnostics(result.diagnostics, style))
        if result.findings:
            parts.append(views.render_findings_text(result.findings, style))
        mark = style("✓", "green") if result.ok else style("✗", "red")
        parts.append(f"{mark} {views.summary_line(result.findings, result.environments)}; {result.specs} specs")
        report = "\n\n".join(parts)
    elif fmt == "json":
        report = views.render_check_json(result.diagnostics, result.findings, result.environments, result.ok)
    elif fmt == "sarif":
        from mlspec.views.sarif import render_sarif

        report = render_sarif(result.diagnostics, result.findings)
    elif fmt == "junit":
        from mlspec.views.junit import render_junit

        report = render_junit(result.diagnostics, result.findings, result.environments)
    else:
        report = views.render_github(result.diagnostics, result.findings)
    return report


@cli.group()
def policy() -> None:
    """Work with the Rego policies (the built-in library plus the project's policies/ folder)."""


@policy.command("test")
@PROJECT_OPTION
@click.option("-v", "--verbose", is_flag=True, help="List every test, not only failures.")
def policy_test(path: Path | None, verbose: bool) -> int:
    """Run every test_ rule of the *_test.rego files, like `opa test`."""
    results = open_project(path).test_policies()
    for r in results:
        if verbose or not r.passed:
            status = "PASS" if r.passed else "FAIL"
            click.echo(
                f"{status}: {r.file}: {r.name} ({r.seconds * 1000:.1f} ms)" + (f"\n  {r.error}" if r.error else "")
            )
    passed = sum(1 for r in results if r.passed)
    click.echo(f"{passed} passed, {len(results) - passed} failed")
    return EXIT_OK if results and passed == len(results) else EXIT_FINDINGS


@cli.command()
@env_option("resolve")
@format_option(["text", "mermaid", "dot"])
@PROJECT_OPTION
def graph(env: str | None, fmt: str, path: Path | None) -> int:
    """Show an environment's resources in dependency (apply) order."""
    from mlspec.views import graph as views

    resolution = _resolve_or_exit(path, env)
    assert resolution.graph is not None
    render = {"text": views.render_text, "mermaid": views.render_mermaid, "dot": views.render_dot}[fmt]
    click.echo(render(resolution.graph))
    return EXIT_OK


@cli.command()
@click.option("--env", "envs", multiple=True, help="Environment to render (repeat for several).")
@click.option("--all-envs", is_flag=True, help="Render every environment.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output folder (default: rendered/).")
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="Only these renderers (feast, kfp, kubernetes, argocd, mlflow, monitoring).",
)
@click.option("--no-cache", is_flag=True, help="Render everything afresh instead of reusing cached output.")
@click.option(
    "--pin",
    is_flag=True,
    help="Pin every InferenceService to the exact model version its alias names in the environment's registry "
    "(storageUri, version, sha256): the GitOps hand-off Argo CD syncs.",
)
@PROJECT_OPTION
def render(
    *,
    envs: tuple[str, ...],
    all_envs: bool,
    output: Path | None,
    targets: tuple[str, ...],
    no_cache: bool,
    pin: bool,
    path: Path | None,
) -> int:
    """Render the files real tools consume, one folder per environment and target.

    Output is deterministic: the same specs give the same bytes, so a git diff of
    rendered/ shows only real changes. manifest.json lists every file with its
    sha256 and the specs it came from. With --pin the output also depends on which
    versions the registry's aliases name (the GitOps hand-off).
    """
    from mlspec.app.rendering import check_targets
    from mlspec.app.tools import shown_path
    from mlspec.errors import UsageError
    from mlspec.views.diagnostics_text import render_diagnostics
    from mlspec.views.style import Style, use_color

    check_targets(targets)  # before looking for a project: a wrong name is reported first
    project = open_project(path)
    validation = project.validate()
    style = Style(use_color(sys.stdout, "auto"))
    if not validation.ok:  # reported once, not once per environment
        click.echo(render_diagnostics(validation.diagnostics, style), color=style.enabled)
        return EXIT_FINDINGS
    names = project.environments(validation) if all_envs else list(envs)
    if not names:
        raise UsageError("name an environment with --env, or pass --all-envs")
    out_root = output or project.root / "rendered"
    failed = False
    for name in names:
        resolution, result, summary = project.render_to(
            name, out_root / name, validation, targets=targets, use_cache=not no_cache, pin=pin
        )
        problems = resolution.diagnostics if result is None else result.diagnostics
        if problems:
            click.echo(render_diagnostics(problems, style), color=style.enabled)
        if result is None or summary is None:
            failed = True
            continue
        click.echo(
            f"{name}: {len(result.artifacts)} files in {shown_path(out_root / name)} "
            f"({len(summary.written)} written, {len(summary.unchanged)} unchanged, {len(summary.removed)} removed)"
        )
    return EXIT_FINDINGS if failed else EXIT_OK


@cli.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write one schema file per kind into DIR.")
@click.option("--kind", help="Print only this kind's schema.")
def schema(output: Path | None, kind: str | None) -> int:
    """Print or write the JSON Schema of every spec kind (for editors and CI)."""
    import json

    from mlspec.app.tools import spec_schema, write_spec_schemas

    if output is not None:
        for path in write_spec_schemas(output):
            click.echo(f"wrote {path}")
        return EXIT_OK
    click.echo(json.dumps(spec_schema(kind), indent=2, sort_keys=True))
    return EXIT_OK


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", help="Project name (defaults to the folder name).")
@click.option("--force", is_flag=True, help="Write into a folder that already holds files.")
def init(directory: Path, name: str | None, force: bool) -> int:
    """Create a new platform repository in DIRECTORY that validates cleanly."""
    from mlspec.scaffold import scaffold

    written = scaffold(directory, name=name, force=force)
    for path in written:
        click.echo(f"  created {path}")
    click.echo(f"✓ new mlspec project in {directory}; next: cd {directory} && mlspec validate")
    return EXIT_OK


def _register_lifecycle() -> None:
    from mlspec.cli import edge as cli_edge
    from mlspec.cli import images as cli_images
    from mlspec.cli import pr as cli_pr
    from mlspec.cli import promote as cli_promote
    from mlspec.cli import reconcile as cli_reconcile
    from mlspec.cli import rehearse as cli_rehearse
    from mlspec.cli import report as cli_report
    from mlspec.cli.lifecycle import lifecycle
    from mlspec.cli.platform import platform

    groups = (
        lifecycle,
        platform,
        cli_pr.commands,
        cli_promote.commands,
        cli_reconcile.commands,
        cli_report.commands,
        cli_edge.commands,
        cli_images.commands,
        cli_rehearse.commands,
    )
    for group in groups:
        for command in group.commands.values():
            cli.add_command(command)


_register_lifecycle()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the CLI and turns every user error into a message and an exit code."""
    try:
        code = cli.main(args=argv, prog_name="mlspec", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except MlspecError as exc:
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"  = help: {exc.hint}", err=True)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (mlspec ... | head): not an error
        return EXIT_OK
    except OSError as exc:  # the file system said no (permissions, missing folders, full disk): not a bug
        target = f" {exc.filename}" if exc.filename else ""
        click.echo(f"error: cannot use{target}: {exc.strerror or exc}", err=True)
        return EXIT_FINDINGS
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # a bug in mlspec, not the user's mistake
        if os.environ.get("MLSPEC_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo("  = help: this is a bug in mlspec; rerun with MLSPEC_DEBUG=1 for details and report it", err=True)
        return EXIT_INTERNAL
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
