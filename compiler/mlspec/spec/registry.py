"""The kinds mlspec knows, by name."""

from __future__ import annotations

from mlspec.spec.base import StrictModel
from mlspec.spec.datasource import DataSource
from mlspec.spec.deployment import Deployment
from mlspec.spec.entity import Entity
from mlspec.spec.environment import Environment
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.project_file import ProjectFile
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.waiver import Waiver

# Order is dependency order: a kind only refers to kinds before it.
RESOURCE_KINDS: dict[str, type[StrictModel]] = {
    "DataSource": DataSource,
    "Entity": Entity,
    "FeatureView": FeatureView,
    "FeatureService": FeatureService,
    "TrainingPipeline": TrainingPipeline,
    "Deployment": Deployment,
    "Environment": Environment,
    "Waiver": Waiver,
}

ALL_KINDS: dict[str, type[StrictModel]] = {**RESOURCE_KINDS, "Project": ProjectFile}

KIND_OF: dict[type[StrictModel], str] = {model: kind for kind, model in ALL_KINDS.items()}
"""The kind name of each model class, for typed look-ups like ``graph.find(Deployment, name)``."""
