"""Resolution: references between specs, environment overlays, the dependency graph."""

from mlspec.resolve.graph import ResolvedGraph, environment_names, resolve_environment
from mlspec.resolve.overlay import merge_patch
from mlspec.resolve.refs import SpecIndex, check_references

__all__ = ["ResolvedGraph", "SpecIndex", "check_references", "environment_names", "merge_patch", "resolve_environment"]
