"""The spec language: one pydantic model per kind, all ``apiVersion: mlspec/v1``."""

from mlspec.spec.base import API_VERSION, StrictModel
from mlspec.spec.datasource import DataSource
from mlspec.spec.deployment import Deployment
from mlspec.spec.entity import Entity
from mlspec.spec.environment import Environment
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.project_file import ProjectFile
from mlspec.spec.registry import ALL_KINDS, RESOURCE_KINDS
from mlspec.spec.training import TrainingPipeline
from mlspec.spec.waiver import Waiver

__all__ = [
    "ALL_KINDS",
    "API_VERSION",
    "RESOURCE_KINDS",
    "DataSource",
    "Deployment",
    "Entity",
    "Environment",
    "FeatureService",
    "FeatureView",
    "ProjectFile",
    "StrictModel",
    "TrainingPipeline",
    "Waiver",
]
