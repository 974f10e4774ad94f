"""Feature attributions (SHAP) in the register step, and the promotion rule they back.

When: a TrainingPipeline whose features include pii (any feature of a FeatureView
whose batch source is tagged ``classification: pii`` in the Feast registry; the
feast renderer writes every source's classification as a tag) or that sets
``evaluation.explainability: true``. pii is read from the applied Feast registry,
the same store the fetch-features step joined from, so it is what was trained on;
when the registry cannot be read, the pipeline is treated as pii (fail closed).

How: ``shap.KernelExplainer`` on the saved model's served score (binary: the
positive-class probability, multiclass: each class's probability, regression: the
prediction in label units): model-agnostic, so custom architectures work too, and
no numba compilation (the permutation explainer's costs ~10 s per process). The
background is a seeded sample of the training split, the explained rows a seeded
sample of the held-out test rows. Bounded: EXPLAINED_ROWS x BACKGROUND_ROWS x
min(2^features - 2, 2 x features + 2048) model rows, on one torch thread; with 8
features about 2-5 s.

What: ``explainability/shap.json`` (format ``mlspec.explainability/v1``: mean |SHAP|
per feature, sorted, and per-row SHAP values with the dataset row index, never the
raw feature values) plus ``explainability/shap.html``, logged to the run; the run
and the registered version get the tags ``mlspec.explainability=shap`` and
``mlspec.explainability.report=explainability/shap.json``.

Promotion: a pii pipeline whose run holds no report (SHAP failed or is not
installed) is registered under its alias but never given ``promote_to``; the
summary's ``explainability.blocked`` says why.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlspec.runtime.context import RuntimeContext

REPORT = "explainability/shap.json"
REPORT_HTML = "explainability/shap.html"
FORMAT = "mlspec.explainability/v1"
TAG = "mlspec.explainability"
REPORT_TAG = "mlspec.explainability.report"
BACKGROUND_ROWS = 100  # training rows that stand in for a feature left out of a coalition
EXPLAINED_ROWS = 100  # held-out test rows explained (fewer when the model is slow: see BUDGET_SECONDS)
BUDGET_SECONDS = 20.0  # about how long the attribution may take, whatever the model's size


@dataclass
class Explanation:
    """What the register step did about explainability; ``as_dict`` goes into its summary."""

    required: bool
    reasons: list[str] = field(default_factory=list)
    pii_features: list[str] | None = None  # None: the Feast registry could not be read (treated as pii)
    report: str | None = None  # the run's artifact path, when logged
    error: str | None = None
    top_features: list[str] = field(default_factory=list)
    seconds: float | None = None
    blocked: str | None = None  # why promote_to was refused

    @property
    def pii(self) -> bool:
        """Whether the pipeline trains on pii (unknown counts as pii)."""
        return self.pii_features is None or bool(self.pii_features)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the step's summary."""
        return asdict(self)


def pii_features(spec: dict[str, Any], ctx: RuntimeContext) -> list[str]:
    """The pipeline's features whose FeatureView's batch source is tagged ``classification: pii`` in Feast."""
    from mlspec.runtime.features import feast_name, open_store

    store = open_store(ctx)
    service = store.get_feature_service(feast_name(spec["spec"]["features"]))
    found: list[str] = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        sources = [getattr(view, "batch_source", None), getattr(view, "stream_source", None)]
        if any((getattr(s, "tags", None) or {}).get("classification") == "pii" for s in sources):
            found += [f.name for f in projection.features]
    return found


def attributions(
    spec: dict[str, Any], ctx: RuntimeContext, model_path: str, dataset_path: str, *, seed: int | None = None
) -> dict[str, Any]:
    """The SHAP report (see the module docstring) for the saved model on the step's dataset."""
    import numpy as np
    import shap
    import torch

    from mlspec.runtime.dataset import read_dataset
    from mlspec.runtime.model import load, split_index, to_arrays

    started = time.monotonic()
    model, saved = load(model_path, spec, ctx)
    features: list[str] = saved["features"]
    frame, _, label = read_dataset(dataset_path, ctx)
    data = to_arrays(frame, features, label, saved["task"], saved["classes"] or None)
    cut = split_index(len(data.y), saved["test_fraction"])
    seed = int(saved["params"].get("seed", 42)) if seed is None else seed
    rng = np.random.default_rng(seed)
    background_index = np.sort(rng.choice(cut, size=min(BACKGROUND_ROWS, cut), replace=False))
    test_rows = len(data.y) - cut
    explained_index = cut + np.sort(rng.choice(test_rows, size=min(EXPLAINED_ROWS, test_rows), replace=False))

    def score(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy().astype(np.float64)
        return out

    threads = torch.get_num_threads()
    state = np.random.get_state()
    torch.set_num_threads(1)  # many small batches: one thread is several times faster than contended threads
    np.random.seed(seed)  # KernelExplainer samples coalitions from numpy's global generator
    try:
        # Bounded by time, not only by rows: KernelExplainer scores (coalitions x background) rows per
        # explained row, so a large model gets fewer explained rows and coalitions, never hours.
        clock = time.perf_counter()
        score(data.x[background_index])
        per_batch = max(time.perf_counter() - clock, 1e-6)
        coalitions = min(2 ** len(features) - 2, 2 * len(features) + 2048)
        nsamples = int(min(coalitions, max(2 * len(features) + 2, BUDGET_SECONDS / per_batch)))
        rows = int(min(len(explained_index), max(1, BUDGET_SECONDS // (per_batch * nsamples))))
        explained_index = explained_index[:rows]
        explainer = shap.KernelExplainer(score, data.x[background_index], feature_names=features)
        values = np.asarray(
            explainer.shap_values(data.x[explained_index], l1_reg=False, silent=True, nsamples=nsamples)
        )
        base = np.asarray(explainer.expected_value, dtype=np.float64)
        predictions = score(data.x[explained_index])
    finally:
        np.random.set_state(state)
        torch.set_num_threads(threads)
    values = values.astype(np.float64)  # [rows, features] or [rows, features, classes]
    per_feature = np.abs(values).mean(axis=0)
    if per_feature.ndim > 1:
        per_feature = per_feature.mean(axis=1)  # multiclass: averaged over the classes
    order = sorted(range(len(features)), key=lambda i: (-per_feature[i], features[i]))
    task = saved["task"]
    outputs = {
        "binary_classification": "probability of the positive class",
        "multiclass_classification": "probability of each class",
        "regression": "prediction in the label's units",
    }[task]
    return {
        "format": FORMAT,
        "method": "shap.KernelExplainer",
        "shap_version": shap.__version__,
        "pipeline": spec["metadata"]["name"],
        "task": task,
        "output": outputs,
        "classes": saved["classes"] if task == "multiclass_classification" else None,
        "features": features,
        "seed": seed,
        "background": {"from": "training split", "rows": len(background_index)},
        "explained": {"from": "held-out test split", "rows": len(explained_index), "coalitions": nsamples},
        "base_value": _plain(base),
        "importance": [
            {"rank": rank, "feature": features[i], "mean_abs_shap": _round(per_feature[i])}
            for rank, i in enumerate(order, start=1)
        ],
        "rows": {
            "index": [int(i) for i in explained_index],  # dataset row numbers; raw (pii) values are not copied
            "prediction": _plain(predictions),
            "shap_values": _plain(values),
        },
        "seconds": round(time.monotonic() - started, 3),
    }


def _round(value: Any) -> float | None:
    number = float(value)
    return round(number, 8) if math.isfinite(number) else None


def _plain(array: Any) -> Any:
    """Numpy values as JSON-safe nested lists (NaN as null)."""
    import numpy as np

    if isinstance(array, np.ndarray):
        return [_plain(item) for item in array] if array.ndim else _round(array)
    return _round(array)


def render_html(report: dict[str, Any]) -> str:
    """A small self-contained page: the global importance as bars."""
    top = max((item["mean_abs_shap"] or 0.0 for item in report["importance"]), default=0.0) or 1.0
    rows = "\n".join(
        f"<tr><td>{item['rank']}</td><td>{html.escape(item['feature'])}</td>"
        f"<td><div style='background:#4a7;height:12px;width:{300 * (item['mean_abs_shap'] or 0.0) / top:.0f}px'>"
        f"</div></td><td>{(item['mean_abs_shap'] or 0.0):.5f}</td></tr>"
        for item in report["importance"]
    )
    title = html.escape(f"Feature attributions: {report['pipeline']}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>{html.escape(report['method'])} (shap {html.escape(report['shap_version'])}) on the "
        f"{html.escape(report['output'])}; {report['explained']['rows']} held-out rows explained against "
        f"{report['background']['rows']} training rows, seed {report['seed']}.</p>"
        f"<table><tr><th>#</th><th>feature</th><th></th><th>mean |SHAP|</th></tr>\n{rows}\n</table></body></html>"
    )


def log_report(spec: dict[str, Any], ctx: RuntimeContext, *, model_path: str, dataset_path: str) -> Explanation:
    """Inside the register step's active MLflow run: explain when required, log the report and tag the run.

    Never raises: a failure is recorded (run tag ``mlspec.explainability_error``) and
    blocks promotion later when the pipeline is pii.
    """
    import mlflow

    try:
        pii: list[str] | None = pii_features(spec, ctx)
    except Exception:  # an unreadable registry: assume pii (fail closed)
        pii = None
    requested = bool(spec["spec"].get("evaluation", {}).get("explainability", False))
    reasons = (["pii features"] if pii is None or pii else []) + (["evaluation.explainability"] if requested else [])
    explanation = Explanation(required=bool(reasons), reasons=reasons, pii_features=pii)
    if not explanation.required:
        return explanation
    try:
        report = attributions(spec, ctx, model_path, dataset_path)
        report["pii_features"] = pii
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "explainability"
            folder.mkdir()
            (folder / "shap.json").write_text(json.dumps(report, indent=1, sort_keys=True))
            (folder / "shap.html").write_text(render_html(report))
            mlflow.log_artifacts(str(folder), "explainability")
    except Exception as exc:  # recorded and, for pii, enforced at promotion
        explanation.error = f"{type(exc).__name__}: {exc}"[:1000]
        mlflow.set_tag("mlspec.explainability_error", explanation.error)
        return explanation
    explanation.report = REPORT
    explanation.top_features = [item["feature"] for item in report["importance"][:5]]
    explanation.seconds = report["seconds"]
    mlflow.set_tags({TAG: "shap", REPORT_TAG: REPORT})
    return explanation


def has_report(client: Any, run_id: str) -> bool:
    """Whether the run really holds the report artifact."""
    try:
        return any(item.path == REPORT for item in client.list_artifacts(run_id, "explainability"))
    except Exception:  # an unreadable artifact store proves nothing
        return False


def check_version(  # noqa: PLR0917
    client: Any, model_name: str, version: str, run_id: str, explanation: Explanation, promote_to: str | None
) -> bool:
    """Tag the registered version with its report; returns whether it may take the promote_to alias.

    A pii pipeline may be promoted only when its run holds the report; otherwise
    ``explanation.blocked`` says why.
    """
    present = explanation.report is not None and has_report(client, run_id)
    if present:
        client.set_model_version_tag(model_name, version, TAG, "shap")
        client.set_model_version_tag(model_name, version, REPORT_TAG, REPORT)
    if promote_to and explanation.pii and not present:
        which = (
            "its pii features could not be determined (Feast registry unreadable)"
            if explanation.pii_features is None
            else f"it uses pii features ({', '.join(explanation.pii_features)})"
        )
        why = explanation.error or "no report was produced"
        explanation.blocked = (
            f"explainability: {model_name} v{version} may not take '{promote_to}': {which} but run {run_id} has no "
            f"feature-attribution report ({REPORT}): {why}"
        )
    return explanation.blocked is None
