"""The project file, mlspec.yaml: where specs live and how mlspec behaves."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from mlspec.spec.base import FieldError, Metadata, StrictModel

RelPath = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^/\\][^\\]*$")]


class LimitsConfig(StrictModel):
    """Loader limits (see mlspec.load.Limits)."""

    max_file_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 2 * 1024 * 1024
    max_depth: Annotated[int, Field(ge=8, le=200)] = 64
    max_alias_nodes: Annotated[int, Field(ge=0, le=10_000_000)] = 10_000


class StateConfig(StrictModel):
    """Where applied state is kept."""

    backend: Literal["sqlite"] = "sqlite"
    path: RelPath = ".mlspec/state.db"


class PolicyConfig(StrictModel):
    """How policies are evaluated."""

    engine: Literal["embedded", "opa"] = "embedded"
    opa_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = Field(
        default=None, description="With engine: opa, the OPA server the same policies are loaded into."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @model_validator(mode="after")
    def _url_for_opa(self) -> PolicyConfig:
        if self.engine == "opa" and self.opa_url is None:
            raise FieldError("opa_url", "engine: opa needs opa_url, e.g. http://opa.internal:8181")
        return self


class ProjectSpec(StrictModel):
    """Layout and behaviour of a platform repository."""

    specs: list[RelPath] = Field(default_factory=lambda: ["specs"], min_length=1)
    environments: RelPath = "environments"
    policies: RelPath = "policies"
    default_environment: str = "local"
    state: StateConfig = Field(default_factory=StateConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)


class ProjectFile(StrictModel):
    """The project file at the root of a platform repository."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion")
    kind: Literal["Project"]
    metadata: Metadata
    spec: ProjectSpec = Field(default_factory=ProjectSpec)
