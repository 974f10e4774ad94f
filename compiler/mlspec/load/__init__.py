"""Loading: YAML files to documents that remember where every node came from."""

from mlspec.load.documents import RawDocument
from mlspec.load.limits import Limits
from mlspec.load.yaml_loader import load_bytes, load_file

__all__ = ["Limits", "RawDocument", "load_bytes", "load_file"]
