"""The options commands share (project folder, environment, format, colour) and the helpers that read them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.views.style import Style

F = TypeVar("F", bound=Callable[..., Any])

PROJECT_OPTION = click.option(
    "-C", "--project", "path", type=click.Path(path_type=Path), help="Project folder (default: find upwards)."
)
COLOR_OPTION = click.option(
    "--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True
)


def env_option(action: str) -> Callable[[F], F]:
    """``--env NAME`` for a command about one environment; omitted, the project file's default_environment."""
    return click.option(
        "--env", "env", help=f"Environment to {action} (default: the project file's default_environment)."
    )


def format_option(choices: Sequence[str], default: str = "text", help_text: str | None = None) -> Callable[[F], F]:
    """``--format`` with ``choices``."""
    return click.option(
        "--format", "fmt", type=click.Choice(list(choices)), default=default, show_default=True, help=help_text
    )


def open_project(path: Path | None) -> Project:
    """The project at ``-C`` or found upwards from the current folder."""
    from mlspec.app.project import Project

    return Project.open(path or Path.cwd())


def environment(project: Project, env: str | None) -> str:
    """``--env``, else the project's default_environment; neither: the usage error a missing --env gives."""
    name = project.environment_or_default(env)
    if name is None:
        ctx = click.get_current_context()
        param = next((p for p in ctx.command.params if p.name == "env"), None)
        raise click.MissingParameter(ctx=ctx, param=param, param_hint=None if param else "'--env'")
    return name


def terminal_style(color: str = "auto") -> Style:
    """Colours for standard output when it is a terminal (or as ``--color`` says)."""
    from mlspec.views.style import Style, use_color

    return Style(use_color(sys.stdout, color))
