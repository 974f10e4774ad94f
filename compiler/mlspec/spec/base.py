"""Shared building blocks of every spec kind: strict models, names, durations, quantities.

Models are strict (no silent coercion of ``"20"`` to ``20``) and forbid unknown
fields, so the JSON Schema exported from them and the validator agree.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from mlspec import cron

API_VERSION = "mlspec/v1"


class FieldError(ValueError):
    """A cross-field check that failed at one field; errors point there, not at the whole object."""

    def __init__(self, field: tuple[str | int, ...] | str, message: str) -> None:
        super().__init__(message)
        self.field: tuple[str | int, ...] = (field,) if isinstance(field, str) else field


class StrictModel(BaseModel):
    """Base of every spec model: strict types, unknown fields are errors, immutable."""

    # Field descriptions are written as Field(description=...): attribute docstrings would make pydantic
    # parse every model's source at import, which slows down every command's start.
    # allow_inf_nan: no target takes an infinite or NaN setting (a `.inf` weight decay trains nothing).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False, allow_inf_nan=False)


# Human wording for each pattern, used when a value does not match.
PATTERN_DESCRIPTIONS: dict[str, str] = {}


def _pattern(pattern: str, description: str) -> str:
    PATTERN_DESCRIPTIONS[pattern] = description
    return pattern


NAME_PATTERN = _pattern(
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    "a name of lowercase letters, digits and '-', starting and ending with a letter or digit, "
    "at most 63 characters (like 'fraud-detector')",
)
# Relative, inside the project: not absolute, no backslash, no '..' segment (no look-ahead: pydantic's regex).
_SEGMENT = r"(?:[^/\\.][^/\\]*|\.|\.[^/\\.][^/\\]*|\.\.[^/\\]+)"
REL_PATH_PATTERN = _pattern(
    rf"^{_SEGMENT}(?:/{_SEGMENT})*/?$",
    "a path inside the project: relative, with '/' between folders and no '..' (like 'specs' or '.mlspec/state.db')",
)
FIELD_PATTERN = _pattern(
    r"^[a-z_][a-z0-9_]{0,62}$",
    "a field name of lowercase letters, digits and '_', not starting with a digit (like 'txn_count_7d')",
)
DURATION_PATTERN = _pattern(r"^[1-9][0-9]*(s|m|h|d|w)$", "a duration like '30s', '15m', '12h', '7d' or '2w'")
CPU_PATTERN = _pattern(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$", "a CPU quantity like '500m', '2' or '1.5'")
MEMORY_PATTERN = _pattern(r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$", "a memory quantity like '512Mi', '8Gi' or '1G'")
CRON_PATTERN = _pattern(
    r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$",
    "a cron schedule with five fields like '0 2 * * *', or @hourly/@daily/@weekly/@monthly/@yearly",
)
GATE_PATTERN = _pattern(r"^(>=|<=|>|<|==)\s*-?[0-9]+(\.[0-9]+)?$", "a comparison like '>= 0.85' or '< 0.1'")
SECRET_REF_PATTERN = _pattern(
    r"^(secret://[a-z0-9][-a-z0-9./_]*|env://[A-Z_][A-Z0-9_]*|k8s://[a-z0-9][-a-z0-9]*/[-a-zA-Z0-9._]+)$",
    "a secret reference like 'secret://payments/db', 'env://DB_PASSWORD' or 'k8s://secret-name/key' "
    "(never the secret value itself)",
)
KMS_REF_PATTERN = _pattern(
    r"^(kms://[a-z0-9][-a-z0-9./_]*|file://[^\s]+)$",
    "a key reference like 'kms://payments' or, for local use, 'file://.mlspec/keys/local.key'",
)
REGION_PATTERN = _pattern(r"^[a-z][a-z0-9-]{1,30}$", "a region name like 'uae-north', 'uae-central' or 'local'")
RESOURCE_REF_PATTERN = _pattern(
    r"^[A-Z][A-Za-z]+/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", "a resource reference like 'Deployment/fraud-api'"
)
POLICY_ID_PATTERN = _pattern(
    r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", "a policy id like 'residency.region' or 'rollout.no_direct_in_prod'"
)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
FieldName = Annotated[str, StringConstraints(pattern=FIELD_PATTERN)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
Cpu = (
    Annotated[str, StringConstraints(pattern=CPU_PATTERN)] | Annotated[int, Field(ge=1)] | Annotated[float, Field(gt=0)]
)
Memory = Annotated[str, StringConstraints(pattern=MEMORY_PATTERN)]


def _valid_cron(expression: str) -> str:
    """The five-field matcher that runs schedules must accept ``expression`` (the pattern only counts fields)."""
    try:
        parsed = cron.parse(expression)
    except cron.CronError as exc:
        raise ValueError(str(exc)) from None  # worded like the batch schedule check always was
    leap_year = (datetime.date(2028, 1, 1) + datetime.timedelta(days=d) for d in range(366))
    if not any(parsed.day_matches(day) for day in leap_year):
        raise ValueError(f"cron schedule '{expression}' never fires: no date has that day of month in that month")
    return expression


Cron = Annotated[str, StringConstraints(pattern=CRON_PATTERN), AfterValidator(_valid_cron)]
Gate = Annotated[str, StringConstraints(pattern=GATE_PATTERN)]
SecretRef = Annotated[str, StringConstraints(pattern=SECRET_REF_PATTERN)]
KmsRef = Annotated[str, StringConstraints(pattern=KMS_REF_PATTERN)]
Region = Annotated[str, StringConstraints(pattern=REGION_PATTERN)]
ResourceRef = Annotated[str, StringConstraints(pattern=RESOURCE_REF_PATTERN)]
PolicyId = Annotated[str, StringConstraints(pattern=POLICY_ID_PATTERN)]
Percent = Annotated[int, Field(ge=0, le=100)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

Classification = Literal["public", "internal", "confidential", "pii"]
DType = Literal[
    "int32", "int64", "float32", "float64", "string", "bool", "bytes", "unix_timestamp",
    "int32_list", "int64_list", "float32_list", "float64_list", "string_list",
]  # fmt: skip
LabelValue = Annotated[str, StringConstraints(max_length=63)]

_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(DURATION_PATTERN)


def duration_seconds(value: str) -> int:
    """Convert a validated duration such as ``7d`` to seconds."""
    if not _DURATION_RE.match(value):
        raise ValueError(f"not a duration: {value!r}")
    return int(value[:-1]) * _DURATION_SECONDS[value[-1]]


class Metadata(StrictModel):
    """Identity and ownership common to every resource."""

    name: Name = Field(
        description=(
            "Unique name of the resource within its kind, like fraud-detector; other specs refer to it by this name."
        )
    )
    owner: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Team or person accountable for this resource."
    )
    description: str | None = Field(default=None, description="What the resource is for, for people reading the spec.")
    labels: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9_./]*[a-z0-9])?$")], LabelValue] = Field(
        default_factory=dict, description="Free-form key/value labels, passed on to the rendered artifacts."
    )


class Encryption(StrictModel):
    """Encryption at rest of a store holding data."""

    at_rest: bool = Field(default=False, description="Encrypt the data at rest.")
    kms_key: KmsRef | None = Field(
        default=None, description="Key that encrypts it, like kms://payments-data (file://... for local use)."
    )
