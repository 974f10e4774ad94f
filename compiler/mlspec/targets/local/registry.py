"""The model registry as the local platform reads and moves it: the runtime's reader
(:mod:`mlspec.runtime.model_registry`), raising TargetError like every target."""

from __future__ import annotations

from mlspec.runtime import model_registry
from mlspec.runtime.model_registry import REJECTED_TAG, ModelVersion
from mlspec.targets.base import TargetError

__all__ = ["REJECTED_TAG", "ModelVersion", "Registry"]


class Registry(model_registry.Registry):
    """MLflow's model registry for one environment; its failures are TargetErrors."""

    error = TargetError
