"""The project file, mlspec.yaml: where specs live and how mlspec behaves."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from mlspec.spec.base import REL_PATH_PATTERN, FieldError, Metadata, StrictModel

STATE_URL_PATTERN = r"^(env://[A-Z_][A-Z0-9_]*|secret://[a-z0-9][-a-z0-9./_]*)$"
RelPath = Annotated[str, StringConstraints(min_length=1, pattern=REL_PATH_PATTERN)]


class LimitsConfig(StrictModel):
    """Loader limits (see mlspec.load.Limits)."""

    max_file_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = Field(
        default=2 * 1024 * 1024, description="Largest spec file read, in bytes."
    )
    max_depth: Annotated[int, Field(ge=8, le=200)] = Field(
        default=64, description="Deepest nesting of YAML mappings and lists."
    )
    max_alias_nodes: Annotated[int, Field(ge=0, le=10_000_000)] = Field(
        default=10_000, description='Most nodes YAML aliases may expand to (guards against "billion laughs").'
    )


class StateConfig(StrictModel):
    """Where applied state is kept: a SQLite file (default) or a PostgreSQL database shared by every machine."""

    backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite", description="Where state is kept: a SQLite file or a shared PostgreSQL database."
    )
    path: RelPath = Field(default=".mlspec/state.db", description="With backend: sqlite, the state file.")
    url: str | None = Field(
        default=None,
        description="With backend: postgres, a reference to the database URL (env://NAME or secret://path), "
        "resolved at run time; never the URL itself.",
        json_schema_extra={"pattern": STATE_URL_PATTERN},
    )
    db_schema: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] | None = Field(
        default=None,
        alias="schema",
        description="With backend: postgres, the database schema this project's tables live in "
        "(default mlspec_<project name>): projects sharing one database each keep their own.",
    )

    @model_validator(mode="after")
    def _url_for_postgres(self) -> StateConfig:
        if self.url is not None and not re.fullmatch(STATE_URL_PATTERN, self.url):  # never echo it: it may be a URL
            raise FieldError(
                "url", "must be a reference like env://MLSPEC_STATE_URL or secret://team/state-db, never the URL itself"
            )
        if self.backend == "postgres" and self.url is None:
            raise FieldError("url", "backend: postgres needs url, a reference like env://MLSPEC_STATE_URL")
        if self.backend == "sqlite" and (self.url is not None or self.db_schema is not None):
            raise FieldError("url" if self.url is not None else "schema", "only backend: postgres takes this")
        if self.db_schema is not None and self.db_schema.startswith("pg_"):
            raise FieldError("schema", "schema names starting with pg_ are reserved by PostgreSQL")
        return self


class PolicyConfig(StrictModel):
    """How policies are evaluated."""

    engine: Literal["embedded", "opa"] = Field(
        default="embedded", description="Evaluate Rego policies in-process (embedded) or on an OPA server."
    )
    opa_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = Field(
        default=None, description="With engine: opa, the OPA server the same policies are loaded into."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0, description="Longest one policy evaluation may take."
    )

    @model_validator(mode="after")
    def _url_for_opa(self) -> PolicyConfig:
        if self.engine == "opa" and self.opa_url is None:
            raise FieldError("opa_url", "engine: opa needs opa_url, e.g. http://opa.internal:8181")
        return self


class ProjectSpec(StrictModel):
    """Layout and behaviour of a platform repository."""

    specs: list[RelPath] = Field(
        default_factory=lambda: ["specs"],
        min_length=1,
        description="Folders holding the resource specs, relative to the project root.",
    )
    environments: RelPath = Field(default="environments", description="Folder holding the Environment specs.")
    policies: RelPath = Field(default="policies", description="Folder holding the Rego policies.")
    default_environment: str = Field(default="local", description="Environment used when a command is given no --env.")
    state: StateConfig = Field(default_factory=StateConfig, description="Where applied state is kept.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="How policies are evaluated.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Limits on the spec files mlspec reads.")


class ProjectFile(StrictModel):
    """The project file at the root of a platform repository."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["Project"] = Field(description="Always Project.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: ProjectSpec = Field(
        default_factory=ProjectSpec,
        description="Where specs, environments and policies live; state and policy settings.",
    )
