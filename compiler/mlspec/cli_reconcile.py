"""GitOps commands (registered on the main CLI)."""

from __future__ import annotations

import click


@click.group()
def commands() -> None:
    """Holder for this module's commands; each is added to the main CLI."""
