"""Input drift detection for a Deployment: logged request features against the training reference, with Evidently.

The rendered ``monitoring/<deployment>.json`` names the reference dataset, the request log, the features,
the method and the threshold; a scheduled job reads both sides and calls :func:`detect_drift`, which has
Evidently compute one drift score per feature, writes Evidently's HTML report and a JSON summary, and returns
a :class:`DriftResult`.

Methods and thresholds (each spec method is the Evidently stattest of the same name; the rule is Evidently's
own, from ``evidently.legacy.calculations.stattests``):

==============  ===========================================  =====================================
spec method     Evidently stattest (score)                   drifted when
==============  ===========================================  =====================================
psi             ``psi``: population stability index          score >= threshold
ks              ``ks``: two-sample Kolmogorov-Smirnov        p-value <= threshold
wasserstein     ``wasserstein``: Wasserstein distance        score >= threshold
                divided by the reference's std
jensenshannon   ``jensenshannon``: Jensen-Shannon distance   score >= threshold
chisquare       ``chisquare``: chi-square test               p-value < threshold
kl_div          ``kl_div``: Kullback-Leibler divergence      score >= threshold
==============  ===========================================  =====================================

So for ``ks`` and ``chisquare`` the threshold is a significance level and a *lower* score means more drift;
for the others it is a distance and a *higher* score means more drift. Evidently's verdict per feature is used
as is; it is never recomputed here. ``ks`` and ``wasserstein`` apply to numerical features only, ``chisquare``
to categorical features only; the others to both.

Too little logged traffic (fewer than ``min_rows`` current rows, or fewer than ``min_rows`` usable values of a
feature) raises :class:`InsufficientDataError` and writes nothing: a scheduled check must never read "no
drift" where nothing could be measured, and the last real report stays in place.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests.registry import StatTestInvalidFeatureTypeError, get_registered_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.tests.base_test import TestStatus
from evidently.presets import DataDriftPreset

from mlspec.atomic import atomic_write
from mlspec.runtime.drift_result import (
    MAX_ROWS,
    P_VALUE_METHODS,
    STATTESTS,
    DriftError,
    DriftResult,
    FeatureDrift,
    InsufficientDataError,
    drift_rule,
)
from mlspec.runtime.request_log import SEALED_PREFIX, read_request_log

__all__ = [
    "MAX_ROWS",
    "P_VALUE_METHODS",
    "SCHEMA_VERSION",
    "SEALED_PREFIX",
    "STATTESTS",
    "DriftError",
    "DriftResult",
    "FeatureDrift",
    "InsufficientDataError",
    "detect_drift",
    "drift_rule",
    "read_reference",
    "read_request_log",
]

SCHEMA_VERSION = 1

_SAMPLE_SEED = 20_240_601
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_reference(path: Path, features: list[str]) -> pd.DataFrame:
    """Read the reference dataset (Parquet, as rendered in ``reference.dataset``): only ``features``, in order."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DriftError(f"cannot read reference dataset {path}: {exc}") from exc
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise DriftError(f"reference dataset {path} lacks feature(s): {', '.join(missing)}")
    return frame[list(features)]


# --------------------------------------------------------------------------- drift


def _sample(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_rows, random_state=_SAMPLE_SEED).sort_index().reset_index(drop=True)


def _is_categorical(series: pd.Series) -> bool:
    return bool(pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series))


def _usable(series: pd.Series, categorical: bool) -> int:
    """Values Evidently will use: not missing and, for numbers, finite."""
    if categorical:
        return int(series.notna().sum())
    numbers = pd.to_numeric(series, errors="coerce")
    return int(numbers.replace([math.inf, -math.inf], math.nan).notna().sum())


def _check_inputs(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    deployment: str,
    features: list[str],
    method: str,
    threshold: float,
) -> None:
    if not _SAFE_NAME.match(deployment):
        raise DriftError(f"deployment name {deployment!r} is not usable in a file name")
    if method not in STATTESTS:
        raise DriftError(f"unknown drift method {method!r}", hint=f"use one of: {', '.join(STATTESTS)}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise DriftError(f"drift threshold must be a number above 0, not {threshold}")
    if method in P_VALUE_METHODS and threshold >= 1:
        raise DriftError(f"{method} compares a p-value with the threshold, so it must be below 1, not {threshold}")
    if not features:
        raise DriftError(f"no features to watch for deployment {deployment}")
    if len(set(features)) != len(features):
        raise DriftError(
            f"features are listed twice: {', '.join(sorted({f for f in features if features.count(f) > 1}))}"
        )
    for side, frame in (("reference", reference), ("current", current)):
        missing = [name for name in features if name not in frame.columns]
        if missing:
            raise DriftError(f"{side} data lacks feature(s): {', '.join(missing)}")


def _column_types(reference: pd.DataFrame, features: list[str], categorical: Sequence[str]) -> dict[str, bool]:
    """feature -> True when categorical: declared so, or not numeric (bools included) in the reference."""
    declared = set(categorical)
    return {name: name in declared or _is_categorical(reference[name]) for name in features}


def _check_method_fits(method: str, types: dict[str, bool]) -> None:
    """Ask Evidently's stattest registry whether ``method`` applies to every feature's column type."""
    stattest = STATTESTS[method]
    unfit: list[str] = []
    for name, is_categorical in types.items():
        column_type = ColumnType.Categorical if is_categorical else ColumnType.Numerical
        try:
            get_registered_stattest(stattest, column_type)
        except StatTestInvalidFeatureTypeError:
            unfit.append(f"{name} ({column_type.value})")
    if unfit:
        raise DriftError(
            f"drift method {method} does not apply to feature(s) {', '.join(unfit)}",
            hint="ks and wasserstein take numerical features, chisquare categorical ones; psi, jensenshannon "
            "and kl_div take both",
        )


def _scores(snapshot: Any, features: list[str], method: str, threshold: float) -> tuple[FeatureDrift, ...]:
    """Per-feature score and verdict from Evidently's ValueDrift results and their drift tests."""
    found: dict[str, FeatureDrift] = {}
    for result in snapshot.metric_results.values():
        for test in result.tests:
            params = test.metric_config.params
            if not str(params.get("type", "")).endswith(":ValueDrift") or test.id != "drift":
                continue
            column = params.get("column")
            if test.status not in (TestStatus.SUCCESS, TestStatus.FAIL):
                raise DriftError(f"Evidently could not decide drift for feature {column}: {test.description}")
            found[column] = FeatureDrift(
                feature=column,
                method=method,
                score=float(result.value),
                threshold=threshold,
                drifted=test.status == TestStatus.FAIL,
            )
    missing = [name for name in features if name not in found]
    if missing:
        raise DriftError(f"Evidently returned no drift result for feature(s): {', '.join(missing)}")
    return tuple(found[name] for name in features)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    deployment: str,
    features: list[str],
    method: str,
    threshold: float,
    out_dir: Path,
    min_rows: int = 30,
    categorical: Sequence[str] = (),
    max_rows: int = MAX_ROWS,
) -> DriftResult:
    """Compare ``current`` traffic with the ``reference`` data per feature with Evidently, and write the reports.

    ``method`` is a spec method (psi, ks, wasserstein, jensenshannon, chisquare, kl_div), passed to Evidently's
    ``DataDriftPreset`` as the stattest of the same name with ``threshold``; each feature's verdict is
    Evidently's: drift when the p-value is at most (ks) or below (chisquare) the threshold, and when the
    distance is at least the threshold for psi, wasserstein (normed by the reference's std), jensenshannon and
    kl_div. Features named in ``categorical``, and non-numeric or boolean columns, are compared as categorical.

    Each side is cut to at most ``max_rows`` rows by a seeded sample, so the same inputs always give the
    same result. Writes ``<out_dir>/<deployment>-drift.html`` (Evidently's report) and
    ``<out_dir>/<deployment>-drift.json`` (:meth:`DriftResult.to_dict` plus ``generated_at``), each atomically.

    Raises :class:`InsufficientDataError` (writing nothing) when ``current`` has fewer than ``min_rows`` rows
    or a feature has fewer than ``min_rows`` usable values in it, and :class:`DriftError` for unusable input:
    unknown method, missing features, a method that does not fit a feature's type, an empty reference.
    """
    _check_inputs(reference, current, deployment=deployment, features=features, method=method, threshold=threshold)
    if max_rows < 1:
        raise DriftError(f"max_rows must be 1 or more, not {max_rows}")
    hint = "drift is checked again on the next schedule; a higher sample_rate logs more requests"
    if len(current) < min_rows:
        raise InsufficientDataError(
            f"not enough logged traffic for {deployment} yet: {len(current)} request(s), at least {min_rows} needed",
            rows=len(current),
            min_rows=min_rows,
            hint=hint,
        )
    types = _column_types(reference, features, categorical)
    _check_method_fits(method, types)
    for name in features:
        if _usable(reference[name], types[name]) == 0:
            raise DriftError(f"reference data has no usable values for feature {name}")
        usable = _usable(current[name], types[name])
        if usable < min_rows:
            raise InsufficientDataError(
                f"not enough logged values of feature {name} for {deployment} yet: {usable}, at least {min_rows} "
                "needed",
                rows=usable,
                min_rows=min_rows,
                hint=hint,
            )

    ref = _sample(reference[features], max_rows)
    cur = _sample(current[features], max_rows)
    numerical = [name for name in features if not types[name]]
    for frame in (ref, cur):
        for name in numerical:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=[name for name in features if types[name]]
    )
    preset = DataDriftPreset(columns=list(features), method=STATTESTS[method], threshold=threshold)
    now = datetime.now(UTC)
    try:
        snapshot = Report([preset], include_tests=True, metadata={"deployment": deployment}).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
            timestamp=now,
            name=f"{deployment} drift",
        )
        html = snapshot.get_html_str(as_iframe=False)
    except (ValueError, TypeError) as exc:
        raise DriftError(f"Evidently could not compute drift for {deployment}: {exc}") from exc
    scores = _scores(snapshot, features, method, threshold)

    html_path = out_dir / f"{deployment}-drift.html"
    json_path = out_dir / f"{deployment}-drift.json"
    result = DriftResult(
        deployment=deployment,
        method=method,
        threshold=threshold,
        reference_rows=len(reference),
        current_rows=len(current),
        features=scores,
        html_report=str(html_path),
        json_summary=str(json_path),
        max_rows=max_rows,
    )
    summary = {"schema_version": SCHEMA_VERSION, **result.to_dict(), "generated_at": now.isoformat()}
    try:
        atomic_write(html_path, html.encode("utf-8"))
        atomic_write(json_path, (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    except OSError as exc:
        raise DriftError(f"cannot write drift reports under {out_dir}: {exc.strerror or exc}") from exc
    return result
