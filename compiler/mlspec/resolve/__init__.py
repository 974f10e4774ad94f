"""Resolution: references between specs, environment overlays, the dependency graph."""

from mlspec.resolve.refs import SpecIndex, check_references

__all__ = ["SpecIndex", "check_references"]
