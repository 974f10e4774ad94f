"""Batch engine: runs a batch Deployment's compiled KFP pipeline with the KFP local runner, and knows its runs.

The steps (entity features from Feast, ONNX scoring in chunks, the sink) are
``mlspec.runtime.batch``; this side passes the environment and the model hashes
state recorded, turns the run's summary into target ids, reads the run log for
``mlspec status``, and says when a scheduled Deployment is due (``mlspec monitor``
runs those).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from mlspec.runtime.batch import ERROR_PREFIX, read_runs, spec_digest
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment
from mlspec.targets.base import TargetError
from mlspec.targets.local.paths import LocalPaths
from mlspec.targets.local.registry import Registry


def summary_ids(summary: dict[str, Any]) -> dict[str, str]:
    """A run summary as target ids (what state records for the Deployment)."""
    return {
        "model": str(summary.get("model", "")),
        "model_version": str(summary.get("model_version", "")),
        "rows": str(summary.get("rows", "")),
        "missing_features": str(summary.get("missing_features", 0)),
        "seconds": str(summary.get("seconds", "")),
        "sink": str(summary.get("sink", "")),
        "last_run": str(summary.get("finished_at", "")),
        "run_id": str(summary.get("run_id", "")),
        "device": str(summary.get("device", "")),
    }


class BatchEngine:
    """Runs batch scoring pipelines locally and reads their run log."""

    def __init__(self, paths: LocalPaths, registry: Registry) -> None:
        self.paths = paths
        self.registry = registry

    def pipeline(self, deployment: str) -> Path:
        """The applied (rendered) pipeline of a batch Deployment."""
        return self.paths.output / "kfp" / "batch" / f"{deployment}.yaml"

    def run(
        self, deployment: Deployment, compiled_yaml: Path, *, expected: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Score now: run the compiled pipeline; returns target ids (model, model_version, rows, seconds, sink,
        last_run...). ``expected``: version -> ONNX sha256 as state recorded it. Raises TargetError on failure."""
        from mlspec.runtime.local_run import PipelineRunError, run_pipeline

        name = deployment.metadata.name
        if not compiled_yaml.is_file():
            raise TargetError(f"{compiled_yaml} does not exist: apply Deployment/{name} first")
        arguments = {
            "environment": self.paths.runtime_context().to_json(),
            "expected_sha256_json": json.dumps(expected or {}, sort_keys=True),
        }
        self.paths.pipelines.mkdir(parents=True, exist_ok=True)
        try:
            summary = run_pipeline(compiled_yaml, arguments, self.paths.pipelines)
        except PipelineRunError as exc:
            said = re.search(re.escape(ERROR_PREFIX) + r"(.+)", exc.log_tail)
            if said:  # the step said what is wrong (the data, the model, the sink): that line is the message
                raise TargetError(f"batch scoring of {name} failed at step '{exc.step}': {said.group(1)}") from None
            raise TargetError(f"batch scoring of {name} failed: {exc}") from None  # the failed step's log tail
        except Exception as exc:
            raise TargetError(f"batch scoring of {name} failed: {exc}") from None
        return summary_ids(summary)

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        """Every run summary of a Deployment, oldest first."""
        return read_runs(self.paths.data_dir, deployment)

    def status(self, deployment: str) -> dict[str, Any] | None:
        """The last run's summary (rows, model version, when, sink...), or None before the first run."""
        runs = self.runs(deployment)
        return runs[-1] if runs else None

    def wanted_version(self, deployment: Deployment) -> str | None:
        """The version the Deployment scores with now (its pinned version, or where its alias points)."""
        model = deployment.spec.model
        if model.version:
            return str(model.version)
        return self.registry.alias_version(model.name, model.alias or "champion")

    def is_current(self, deployment: Deployment, deployment_json: str, feature_service: str) -> bool:
        """The last run used this very spec and the version the Deployment scores with now: nothing to redo."""
        last = self.status(deployment.metadata.name)
        return (
            last is not None
            and last.get("spec_sha256") == spec_digest(deployment_json, feature_service)
            and str(last.get("model_version")) == self.wanted_version(deployment)
        )

    def due(self, deployment: Deployment, now: dt.datetime | None = None) -> bool:
        """A scheduled Deployment whose schedule fired since its last run started (never run: due)."""
        from mlspec.cron import is_due

        batch = deployment.spec.batch if isinstance(deployment.spec, BatchDeploymentSpec) else None
        if batch is None or not batch.schedule:
            return False
        last = self.status(deployment.metadata.name)
        started = dt.datetime.fromisoformat(last["started_at"]) if last and last.get("started_at") else None
        return is_due(batch.schedule, started, now or dt.datetime.now(dt.UTC))
