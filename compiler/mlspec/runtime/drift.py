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
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests.registry import StatTestInvalidFeatureTypeError, get_registered_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.tests.base_test import TestStatus
from evidently.presets import DataDriftPreset

from mlspec.atomic import atomic_write
from mlspec.errors import MlspecError
from mlspec.serving.reqlog import SEALED

if TYPE_CHECKING:
    from mlspec.crypto.envelope import Keys

SCHEMA_VERSION = 1

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

_SAMPLE_SEED = 20_240_601
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCALAR = (str, int, float, bool)


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


# --------------------------------------------------------------------------- request log

SEALED_PREFIX = f'{{"{SEALED}":'  # how a sealed flush line starts (json.dumps of {SEALED: ...})


def _log_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.glob("*.jsonl") if p.is_file())
    if path.is_file():
        return [path]
    raise DriftError(f"request log not found: {path}", hint="the model server writes it once it serves traffic")


def _records(files: list[Path], keys: Keys | None) -> Iterator[str]:
    for file in files:
        try:
            with file.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith(SEALED_PREFIX):  # one flush of a sealed log: its lines, decrypted in memory
                        yield from _unseal(line, file, keys)
                    else:
                        yield line
        except OSError as exc:
            raise DriftError(f"cannot read request log {file}: {exc.strerror or exc}") from exc


def _unseal(line: str, file: Path, keys: Keys | None) -> list[str]:
    """The plaintext lines of one sealed flush; DriftError without a key or when it does not open."""
    import base64
    import binascii

    from mlspec.crypto import CryptoError, decrypt

    if keys is None:
        raise DriftError(
            f"request log {file} is sealed with the environment's key and no key was given",
            hint="read it with keys=RuntimeContext.key_resolver() (mlspec monitor does)",
        )
    try:
        blob = base64.b64decode(json.loads(line)[SEALED], validate=True)
        return decrypt(blob, keys).decode("utf-8").splitlines(keepends=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DriftError(f"request log {file}: a sealed line is malformed: {exc}") from None
    except CryptoError as exc:
        raise DriftError(f"request log {file}: {exc}") from None


def _timestamp(record: Mapping[str, Any]) -> float | None:
    """Seconds since the epoch from ``ts`` (a number) or ``timestamp`` (ISO-8601, ``Z`` allowed); None if neither."""
    ts = record.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if ts is None and isinstance(record.get("timestamp"), str):
        try:
            when = datetime.fromisoformat(record["timestamp"])
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None


def _parse(line: str, features: Sequence[str]) -> tuple[float, tuple[Any, ...]] | None:
    """The timestamp and feature values of one log line, or None when the line is malformed."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    ts = _timestamp(record)
    values = record.get("features", record)  # nested {"features": {...}} or flat, as the model server writes
    if ts is None or not isinstance(values, dict):
        return None
    row = tuple(values.get(name) for name in features)
    if any(v is not None and not isinstance(v, _SCALAR) for v in row):
        return None
    return ts, row


def read_request_log(
    path: Path, features: list[str], *, since: float | None = None, limit: int | None = None, keys: Keys | None = None
) -> pd.DataFrame:
    """Read the model server's sampled request log into one column per feature, in ``features`` order.

    ``path`` is one JSON-lines file or a folder of them (``*.jsonl``, read in name order). Each line looks like
    ``{"ts": 1763870000.1, "variant": "stable", "features": {"txn_count_7d": 3, ...}, "score": 0.12}``; the
    flat form ``{"txn_count_7d": 3, ..., "timestamp": "2025-11-23T04:33:20.100000Z", "variant": ...}`` that
    ``mlspec.serving.reqlog`` writes is read too. A line that is not a JSON object with a time (numeric ``ts``
    or ISO-8601 ``timestamp``) and scalar feature values (a ``features`` object, else the record itself) is
    malformed: it is skipped and counted in ``frame.attrs["malformed_lines"]``. A feature missing from a
    line reads as missing (NaN/None). ``since`` keeps lines with ``ts >= since``; ``limit`` keeps the last
    ``limit`` kept lines (the most recent traffic). Blank lines are ignored. A sealed log (a line
    ``{"sealed": "<base64 envelope>"}`` per flush, see ``mlspec.serving.reqlog``) is decrypted in memory with
    ``keys``; without them, or with the wrong ones, it is a DriftError.
    """
    if limit is not None and limit < 0:
        raise DriftError(f"limit must be 0 or more, not {limit}")
    files = _log_files(path)
    rows: deque[tuple[Any, ...]] = deque(maxlen=limit)
    malformed = 0
    for line in _records(files, keys):
        if not line.strip():
            continue
        parsed = _parse(line, features)
        if parsed is None:
            malformed += 1
        elif since is None or parsed[0] >= since:
            rows.append(parsed[1])
    frame = pd.DataFrame.from_records(list(rows), columns=list(features))
    frame.attrs["malformed_lines"] = malformed
    frame.attrs["files"] = [str(f) for f in files]
    return frame


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
