"""A Kubeflow Pipelines server through ``kfp.Client``: pipeline versions, runs, and recurring runs from schedules.

A pipeline version is named after the compiled YAML's sha256, so uploading the same
pipeline twice finds the version instead of adding one. Recurring runs are found by
name first: an unchanged one is kept, a changed one is replaced (KFP cannot edit one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.submit import by_name, kfp_cron
from mlspec.targets.base import TargetError


@dataclass(frozen=True)
class PipelineRef:
    """An uploaded pipeline version."""

    pipeline_id: str
    version_id: str


class KfpServer:
    """One KFP server (through ``kfp.Client``), one experiment per project and environment."""

    def __init__(
        self,
        client: Any = None,
        *,
        host: str | None = None,
        experiment: str,
        namespace: str | None = None,
        context: RuntimeContext,
    ) -> None:
        self._client = client
        self.host = host
        self.experiment = experiment
        self.namespace = namespace
        self.context = context
        self._experiment_id: str | None = None

    @property
    def client(self) -> Any:
        """``kfp.Client`` (made on first use: importing kfp takes a second)."""
        if self._client is None:
            import warnings

            import kfp

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self._client = kfp.Client(host=self.host, namespace=self.namespace or "kubeflow")
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import contextlib
        import importlib
        import io

        # kfp's generated client (no type information: imported by name)
        api_exception: type[Exception] = importlib.import_module("kfp_server_api.exceptions").ApiException

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # kfp prints "Run details: <link>"
                return fn(*args, **kwargs)
        except api_exception as exc:
            status, reason, body = (getattr(exc, k, "") for k in ("status", "reason", "body"))
            raise TargetError(f"KFP {what}: HTTP {status} {reason}: {str(body or '')[:300]}") from None
        except OSError as exc:
            raise TargetError(f"KFP {what}: cannot reach {self.host or 'the KFP server'}: {exc}") from None

    def experiment_id(self) -> str:
        """The experiment's id, created when missing."""
        if self._experiment_id is None:
            try:
                found = self._call(
                    "get experiment", self.client.get_experiment, experiment_name=self.experiment,
                    namespace=self.namespace,
                )  # fmt: skip
            except ValueError:  # kfp: "No experiment is found with name ..."
                found = self._call(
                    "create experiment", self.client.create_experiment, self.experiment, namespace=self.namespace
                )
            self._experiment_id = str(found.experiment_id)
        return self._experiment_id

    def upload(self, name: str, package: Path, sha256: str, description: str = "") -> PipelineRef:
        """The pipeline and its version for this exact YAML, uploaded when missing."""
        client = self.client
        pipeline_id = self._call("find pipeline", client.get_pipeline_id, name)
        if pipeline_id is None:
            pipeline = self._call(
                "upload pipeline", client.upload_pipeline, str(package), pipeline_name=name,
                description=description or None, namespace=self.namespace,
            )  # fmt: skip
            pipeline_id = pipeline.pipeline_id
        version_name = f"{name}-{sha256[:12]}"
        listing = self._call(
            "list pipeline versions", client.list_pipeline_versions, pipeline_id, filter=by_name(version_name)
        )
        versions = listing.pipeline_versions or []
        if versions:
            return PipelineRef(str(pipeline_id), str(versions[0].pipeline_version_id))
        version = self._call(
            "upload pipeline version", client.upload_pipeline_version, str(package), version_name,
            pipeline_id=pipeline_id, description=description or None,
        )  # fmt: skip
        return PipelineRef(str(pipeline_id), str(version.pipeline_version_id))

    def parameters(self) -> dict[str, Any]:
        """The run parameters: the RuntimeContext JSON as ``environment``."""
        return {"environment": self.context.to_json()}

    def run(self, name: str, pipeline: PipelineRef) -> str:
        """Start one run of a pipeline version; returns its run id."""
        run = self._call(
            "create run", self.client.run_pipeline, self.experiment_id(), f"{name} {self.context.environment}",
            params=self.parameters(), pipeline_id=pipeline.pipeline_id, version_id=pipeline.version_id,
        )  # fmt: skip
        return str(run.run_id)

    def schedule_name(self, pipeline: str) -> str:
        """The recurring run's name for a pipeline in this environment."""
        return f"{pipeline}-{self.context.environment}-schedule"

    def find_schedule(self, pipeline: str) -> Any:
        """The recurring run of ``pipeline`` (a ``V2beta1RecurringRun``), or None."""
        listing = self._call(
            "list recurring runs", self.client.list_recurring_runs, experiment_id=self.experiment_id(),
            filter=by_name(self.schedule_name(pipeline)),
        )  # fmt: skip
        found = listing.recurring_runs or []
        return found[0] if found else None

    def ensure_schedule(self, schedule: dict[str, Any], pipeline: PipelineRef) -> tuple[str, bool]:
        """Create or replace the recurring run for a ``kfp/<name>.schedule.json``; (id, changed)."""
        name = str(schedule["pipeline"])
        cron = kfp_cron(str(schedule["cron"]))
        concurrency = int(schedule.get("max_concurrency", 1))
        no_catchup = bool(schedule.get("no_catchup", True))
        params = self.parameters()
        existing = self.find_schedule(name)
        if existing is not None:
            trigger = getattr(existing.trigger, "cron_schedule", None)
            same = (
                getattr(trigger, "cron", None) == cron
                and str(existing.max_concurrency) == str(concurrency)
                and bool(existing.no_catchup) == no_catchup
                and getattr(existing.pipeline_version_reference, "pipeline_version_id", None) == pipeline.version_id
                and dict(getattr(existing.runtime_config, "parameters", None) or {}) == params
                and str(existing.mode) != "DISABLE"
            )
            if same:
                return str(existing.recurring_run_id), False
            self._call("delete recurring run", self.client.delete_recurring_run, existing.recurring_run_id)
        created = self._call(
            "create recurring run", self.client.create_recurring_run, self.experiment_id(), self.schedule_name(name),
            cron_expression=cron, max_concurrency=concurrency, no_catchup=no_catchup, params=params,
            pipeline_id=pipeline.pipeline_id, version_id=pipeline.version_id, enabled=True,
        )  # fmt: skip
        return str(created.recurring_run_id), True

    def delete_schedule(self, pipeline: str) -> bool:
        """Delete a pipeline's recurring run; True when there was one."""
        existing = self.find_schedule(pipeline)
        if existing is None:
            return False
        self._call("delete recurring run", self.client.delete_recurring_run, existing.recurring_run_id)
        return True
