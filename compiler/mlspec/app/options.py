"""What a use case is asked to do, as one value each (instead of long keyword lists)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mlspec.plan.model import Plan


@dataclass(frozen=True)
class PlanOptions:
    """How to plan: keep removed resources (``prune`` False), read live state first (``refresh``), as whom."""

    prune: bool = True
    refresh: bool = False
    revision: str | None = None  # the revision to record (default: the project's git revision)
    who: str | None = None  # the actor (default: git user or login); environments may restrict it
    today: dt.date | None = None  # the day waivers are judged on (default: today)


@dataclass(frozen=True)
class ApplyOptions:
    """How to apply: the plan options, a saved plan to apply exactly, and what the apply may do."""

    plan: PlanOptions = PlanOptions()
    saved: Plan | None = None
    allow_destroy: bool = False
    allow_dirty: bool = False
    lock_timeout: float = 0.0
    engines: bool = True  # on a local tier, run the engines (False: write artifacts and state only)
    direct: bool = False  # on other tiers, also apply to the cluster instead of leaving it to GitOps


@dataclass(frozen=True)
class DestroyOptions:
    """How to destroy: production needs ``allow_destroy``."""

    allow_destroy: bool = False
    lock_timeout: float = 0.0
    who: str | None = None


@dataclass(frozen=True)
class RehearsalOptions:
    """The stand-ins a rehearsal talks to instead of the environment's stores (all on this machine)."""

    azure: str | None = None  # an Azure Storage connection string (Azurite)
    s3: str | None = None  # an S3 endpoint URL
    redis: str | None = None  # host:port
    postgres: str | None = None  # a postgresql:// URL
    ca_file: str | None = None  # the CA the stand-ins' TLS certificates chain to
