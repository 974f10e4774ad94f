"""What a drift check found: per-feature scores and verdicts, its errors, and the methods it knows.

Kept apart from :mod:`mlspec.runtime.drift` (which runs Evidently) so reading a stored result needs no Evidently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlspec.errors import MlspecError

#: spec method (``Deployment.spec.monitoring.drift.method``) -> Evidently stattest name.
STATTESTS: Mapping[str, str] = {
    "psi": "psi",
    "ks": "ks",
    "wasserstein": "wasserstein",
    "jensenshannon": "jensenshannon",
    "chisquare": "chisquare",
    "kl_div": "kl_div",
}

#: Methods whose score is a p-value: drift when the score is below the threshold (see the module docstring).
P_VALUE_METHODS = frozenset({"ks", "chisquare"})

#: The most rows per side handed to Evidently; larger inputs are sampled deterministically.
MAX_ROWS = 50_000


class DriftError(MlspecError):
    """Drift could not be computed: bad input, unknown method, a method that does not fit a feature."""


class InsufficientDataError(DriftError):
    """Not enough logged traffic yet to say anything about drift (not the same as "no drift")."""

    def __init__(self, message: str, *, rows: int, min_rows: int, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.rows = rows
        self.min_rows = min_rows


def drift_rule(method: str) -> str:
    """The rule Evidently applies for ``method``, in words, e.g. ``"p_value <= threshold"``."""
    if method == "ks":
        return "p_value <= threshold"
    if method == "chisquare":
        return "p_value < threshold"
    return "score >= threshold"


@dataclass(frozen=True)
class FeatureDrift:
    """Evidently's drift score and verdict for one feature."""

    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """One drift check of a Deployment: per-feature scores and where the reports were written."""

    deployment: str
    method: str
    threshold: float
    reference_rows: int  # rows given; at most max_rows of them were compared
    current_rows: int
    features: tuple[FeatureDrift, ...]
    html_report: str
    json_summary: str
    max_rows: int = MAX_ROWS

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the features Evidently found drifted, in feature order."""
        return tuple(f.feature for f in self.features if f.drifted)

    @property
    def drift_detected(self) -> bool:
        """True when any feature drifted."""
        return any(f.drifted for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the derived fields included)."""
        return {
            "deployment": self.deployment,
            "method": self.method,
            "evidently_stattest": STATTESTS.get(self.method, self.method),
            "drift_rule": drift_rule(self.method),
            "threshold": self.threshold,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "max_rows": self.max_rows,
            "drift_detected": self.drift_detected,
            "drifted_features": list(self.drifted_features),
            "features": [
                {
                    "feature": f.feature,
                    "method": f.method,
                    "score": _json_float(f.score),
                    "threshold": f.threshold,
                    "drifted": f.drifted,
                }
                for f in self.features
            ],
            "html_report": self.html_report,
            "json_summary": self.json_summary,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """Inverse of :meth:`to_dict` (also reads a JSON summary; derived and extra keys are ignored)."""
        return cls(
            deployment=str(data["deployment"]),
            method=str(data["method"]),
            threshold=float(data["threshold"]),
            reference_rows=int(data["reference_rows"]),
            current_rows=int(data["current_rows"]),
            features=tuple(
                FeatureDrift(
                    feature=str(f["feature"]),
                    method=str(f["method"]),
                    score=math.nan if f["score"] is None else float(f["score"]),
                    threshold=float(f["threshold"]),
                    drifted=bool(f["drifted"]),
                )
                for f in data["features"]
            ),
            html_report=str(data["html_report"]),
            json_summary=str(data["json_summary"]),
            max_rows=int(data.get("max_rows", MAX_ROWS)),
        )


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
