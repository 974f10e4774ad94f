"""Waiver: a time-boxed, approved exemption of named resources from named policies."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from mlspec.spec.base import Metadata, Name, PolicyId, ResourceRef, StrictModel


class WaiverSpec(StrictModel):
    """What is exempted, why, by whom, until when."""

    policy: PolicyId = Field(description="The policy waived, like residency.region.")
    resources: list[ResourceRef] = Field(
        min_length=1, description="The resources exempted, like DataSource/legacy-txns."
    )
    environments: list[Name] | None = Field(default=None, description="Omit to apply in every environment.")
    reason: Annotated[str, StringConstraints(min_length=10)] = Field(
        description="Why the exemption is needed and how it ends (at least 10 characters)."
    )
    approved_by: Annotated[str, StringConstraints(min_length=1)] = Field(description="Who approved the exemption.")
    expires: datetime.date = Field(strict=False, description="ISO date (YYYY-MM-DD); expired waivers deny.")


class Waiver(StrictModel):
    """An exemption from a policy."""

    api_version: Literal["mlspec/v1"] = Field(alias="apiVersion", description="Always mlspec/v1.")
    kind: Literal["Waiver"] = Field(description="Always Waiver.")
    metadata: Metadata = Field(description="Name, owner, description and labels.")
    spec: WaiverSpec = Field(description="The policy, resources, reason, approver and expiry.")
