"""Merge bridge, to delete at merge: gitops/promote.py (line 51) and gitops/reconcile.py (line 47, 637) still
import ``Project`` from here; they move to ``mlspec.app.project`` when their owners' branches land."""

from mlspec.app.project import Project

__all__ = ["Project"]
