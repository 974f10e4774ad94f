"""The mlspec command line: thin click commands over the application layer (``mlspec.app``).

``mlspec.cli:main`` is the console entry point; ``cli`` is the click group.
Modules: ``main`` (the group, the entry point, the compile commands), ``options``
(the options every command shares), ``lifecycle`` (plan, apply, diff, rollback, state,
audit), ``platform`` (status, monitor, score, destroy), ``edge``, ``pr``, ``promote``,
``reconcile``, ``report``.
"""

from mlspec.cli.main import cli, main

__all__ = ["cli", "main"]
