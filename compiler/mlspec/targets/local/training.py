"""Training engine: runs a TrainingPipeline's compiled KFP pipeline with the KFP local runner (no Docker).

The steps (features from Feast, torch training, gates, ONNX export and parity,
MLflow registration) are ``mlspec.runtime.steps``; this side picks the arguments,
reads the run's summary, and turns a failed gate into a failed apply that names
the metric and the margin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.spec.training import TrainingPipeline
from mlspec.targets.base import TargetError
from mlspec.targets.local.paths import LocalPaths
from mlspec.targets.local.registry import Registry


class TrainingEngine:
    """Runs training pipelines locally and keeps the registry's champion alias meaningful."""

    def __init__(self, paths: LocalPaths, registry: Registry) -> None:
        self.paths = paths
        self.registry = registry

    def run(self, pipeline: TrainingPipeline, compiled: Path, *, promote_directly: bool) -> dict[str, Any]:
        """Run the compiled pipeline; returns the register step's summary. Raises TargetError when a gate fails."""
        from mlspec.runtime.local_run import run_pipeline

        arguments = {"environment": self.paths.runtime_context().to_json(), "promote_directly": promote_directly}
        self.paths.pipelines.mkdir(parents=True, exist_ok=True)
        try:
            summary = run_pipeline(compiled, arguments, self.paths.pipelines)
        except TargetError:
            raise
        except Exception as exc:  # the runner's message names the failed step and its log tail
            raise TargetError(f"training pipeline {pipeline.metadata.name} failed: {exc}") from None
        return self.settle(pipeline, summary)

    def settle(self, pipeline: TrainingPipeline, summary: dict[str, Any]) -> dict[str, Any]:
        """Judge a finished run: failed gates or a missing attribution report fail it; the first good model serves."""
        if not summary.get("gates_passed"):
            failed = [g for g in summary.get("gates", []) if not g.get("passed")]
            raise TargetError(
                f"{pipeline.model_name}: evaluation gate(s) failed, model not promoted: "
                + "; ".join(str(g["message"]) for g in failed),
                path=("spec", "evaluation", "gates", str(failed[0]["metric"])) if failed else ("spec", "evaluation"),
                hint="improve the model (features, hyperparameters, more data) or relax the gate if the bar is wrong",
            )
        blocked = (summary.get("explainability") or {}).get("blocked")
        if blocked:
            # a pii model without its attribution report never serves: not as champion, not even as a canary
            alias = pipeline.spec.registration.alias
            if self.registry.alias_version(pipeline.model_name, alias) == str(summary.get("version")):
                self.registry.delete_alias(pipeline.model_name, alias)
            raise TargetError(blocked)
        promote_to = pipeline.spec.registration.promote_to
        if (
            promote_to
            and summary.get("version")
            and self.registry.alias_version(pipeline.model_name, promote_to) is None
        ):
            # nothing serves yet: the first model that passed its gates is the champion
            self.registry.set_alias(pipeline.model_name, promote_to, str(summary["version"]))
            summary["promoted"] = True
        reference = summary.get("reference_data")
        if reference and Path(reference).is_file():
            # where the rendered monitoring config says the drift baseline of this model is
            target = self.paths.data_dir / "datasets" / pipeline.model_name / "reference.parquet"
            atomic_write(target, Path(reference).read_bytes())
        return summary
