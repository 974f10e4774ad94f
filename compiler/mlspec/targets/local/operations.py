"""Merge bridge, to delete at merge: gitops/reconcile.py still imports ``monitor`` from here; the day-2
operations live in ``mlspec.app.operations``."""

from mlspec.app.operations import monitor

__all__ = ["monitor"]
