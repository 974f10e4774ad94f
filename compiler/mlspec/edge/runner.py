"""Run a verified edge package with onnxruntime: rows by feature name (or in column order) in, outputs out.

Only the bytes :func:`mlspec.edge.verify.verify_package` checked are run; the files
are not read again after verification.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlspec.edge.errors import EdgeError
from mlspec.edge.verify import Manifest

if TYPE_CHECKING:
    import numpy as np


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan  # a missing value: the model fills it (mlspec models use the training mean)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EdgeError(f"{where}: {value!r} is not a number")
    return float(value)


def rows_from_json(data: Any, manifest: Manifest) -> np.ndarray:
    """Rows for the package's one [batch, F] input from JSON: an object of feature -> value (one row), a list of
    such objects, one list of F numbers, a list of such lists, or any of those under ``"instances"``."""
    import numpy as np

    if isinstance(data, dict) and set(data) == {"instances"}:
        data = data["instances"]
    if len(manifest.inputs) != 1 or len(manifest.inputs[0]["shape"]) != 2:
        raise EdgeError("this package's model does not take one [batch, features] input; run it with onnxruntime")
    features = [f["name"] for f in manifest.inputs[0].get("features", [])]
    width = manifest.inputs[0]["shape"][1] if isinstance(manifest.inputs[0]["shape"][1], int) else len(features)
    items = [data] if isinstance(data, dict) or (isinstance(data, list) and data and not _is_row_list(data)) else data
    if not isinstance(items, list) or not items:
        raise EdgeError("the input must be a JSON object or list holding at least one row")
    rows: list[list[float]] = []
    for n, item in enumerate(items):
        where = f"row {n}"
        if isinstance(item, dict):
            if not features:
                raise EdgeError(f"{where}: the package names no features; give each row as a list of {width} numbers")
            unknown = sorted(set(item) - set(features))
            missing = [f for f in features if f not in item]
            if unknown or missing:
                raise EdgeError(
                    f"{where}: "
                    + "; ".join(
                        ([f"unknown feature(s) {unknown}"] if unknown else [])
                        + ([f"missing feature(s) {missing} (give null for a missing value)"] if missing else [])
                    )
                    + f"; the model takes {features}"
                )
            rows.append([_number(item[f], f"{where}, {f}") for f in features])
        elif isinstance(item, list):
            if len(item) != width:
                raise EdgeError(f"{where}: {len(item)} values, the model takes {width} ({', '.join(features)})")
            rows.append([_number(v, f"{where}, column {i}") for i, v in enumerate(item)])
        else:
            raise EdgeError(f"{where}: {item!r} is neither an object of features nor a list of values")
    return np.asarray(rows, dtype=np.float32)


def _is_row_list(data: list[Any]) -> bool:
    """A list of rows (objects or lists), as opposed to one row of numbers."""
    return all(isinstance(item, dict | list) for item in data)


def run(manifest: Manifest, rows: np.ndarray) -> dict[str, list[Any]]:
    """Every output of the package's model for ``rows``, as lists (onnxruntime, CPU)."""
    from mlspec.edge.quantize import session

    try:
        model = session(manifest.model_bytes)
        name = model.get_inputs()[0].name
        outputs = model.run(None, {name: rows})
    except EdgeError:
        raise
    except Exception as exc:  # onnxruntime's own exception types
        raise EdgeError(f"onnxruntime cannot run {manifest.source}'s model: {exc}") from None
    return {o.name: value.tolist() for o, value in zip(model.get_outputs(), outputs, strict=True)}
