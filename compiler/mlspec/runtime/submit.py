"""Start a pipeline's run and create or update its recurring run on a Kubeflow Pipelines server.

The GitOps hook entry point: Argo CD syncs a pipeline's Kubernetes-native Pipeline and
PipelineVersion objects, then runs ``python -m mlspec.runtime.submit --request JSON`` in
the runtime image as a PostSync hook Job (rendered by ``mlspec.render.gitops``). The
request names the pipeline, the exact version, the run's parameters and the schedule;
nothing here needs the compiler. Every step is idempotent: a run of the same request
is found by its name and not started twice, an unchanged recurring run is kept, a
changed one replaced (KFP cannot edit one), and a removed schedule deleted. The
recurring run is named ``<pipeline>-<environment>-schedule``, as ``mlspec apply
--direct`` names it, so the two modes manage the same object.

The server is ``KF_PIPELINES_ENDPOINT`` (kfp's variable); in a cluster, kfp.Client
authenticates with the projected service-account token at ``KF_PIPELINES_SA_TOKEN_PATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

WAIT_SECONDS = 120  # how long the PipelineVersion may take to appear on the server after Argo CD created it


class SubmitError(Exception):
    """The server refused a call, or the pipeline version never appeared."""


def kfp_cron(cron: str) -> str:
    """KFP takes 6-field cron (seconds first); a 5-field expression runs at second 0."""
    fields = cron.split()
    return " ".join(["0", *fields]) if len(fields) == 5 else cron


def by_name(name: str) -> str:
    """A KFP list filter matching ``display_name`` exactly."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


@dataclass(frozen=True)
class Schedule:
    """A recurring run's 5- or 6-field cron, concurrency and catch-up."""

    cron: str
    max_concurrency: int = 1
    no_catchup: bool = True


@dataclass(frozen=True)
class SubmitRequest:
    """What one hook does: which version to run under which name, and the schedule (None: delete it)."""

    pipeline: str
    version: str
    experiment: str
    run_name: str
    parameters: dict[str, Any]
    schedule_name: str
    schedule: Schedule | None
    run: bool = True

    @classmethod
    def from_json(cls, text: str) -> SubmitRequest:
        """The request as rendered into the Job's arguments."""
        data = json.loads(text)
        schedule = data.pop("schedule", None)
        return cls(**data, schedule=Schedule(**schedule) if schedule else None)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the renderer writes it, and its hash names the hook Job."""
        data = {**self.__dict__, "schedule": self.schedule.__dict__ if self.schedule else None}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PruneRequest:
    """The environment's recurring runs to keep: any other ``<pipeline><suffix>`` of the experiment is deleted
    (its pipeline left the specs, as ``mlspec apply --direct`` deletes it with the resource)."""

    experiment: str
    suffix: str
    keep: tuple[str, ...]

    @classmethod
    def from_json(cls, text: str) -> PruneRequest:
        """The request as rendered into the Job's arguments."""
        data = json.loads(text)
        return cls(data["experiment"], data["suffix"], tuple(data["keep"]))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys)."""
        data = {"experiment": self.experiment, "suffix": self.suffix, "keep": sorted(self.keep)}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


class Submitter:
    """The calls a request needs, through ``kfp.Client`` (any object with its methods)."""

    def __init__(
        self, client: Any, wait_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.client = client
        self.wait_seconds = WAIT_SECONDS if wait_seconds is None else wait_seconds
        self.sleep = sleep

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # kfp prints "Run details: <link>"
                return fn(*args, **kwargs)
        except OSError as exc:
            raise SubmitError(f"KFP {what}: cannot reach the server: {exc}") from None
        except Exception as exc:  # kfp_server_api's ApiException carries status and body
            if type(exc).__name__ != "ApiException":
                raise
            status, reason, body = (getattr(exc, k, "") for k in ("status", "reason", "body"))
            raise SubmitError(f"KFP {what}: HTTP {status} {reason}: {str(body or '')[:300]}") from None

    def version_ids(self, request: SubmitRequest) -> tuple[str, str]:
        """(pipeline id, version id) of the request's version, waiting for the server to list it."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            pipeline_id = self._call("find pipeline", self.client.get_pipeline_id, request.pipeline)
            if pipeline_id is not None:
                listing = self._call(
                    "list pipeline versions", self.client.list_pipeline_versions, pipeline_id,
                    filter=by_name(request.version),
                )  # fmt: skip
                found = listing.pipeline_versions or []
                if found:
                    return str(pipeline_id), str(found[0].pipeline_version_id)
            if time.monotonic() >= deadline:
                raise SubmitError(
                    f"pipeline {request.pipeline!r} version {request.version!r} is not on the KFP server; is KFP "
                    "storing pipelines in Kubernetes (the PipelineVersion object Argo CD synced)?"
                )
            self.sleep(5)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created when missing."""
        try:
            found = self._call("get experiment", self.client.get_experiment, experiment_name=name)
        except ValueError:  # kfp: "No experiment is found with name ..."
            found = self._call("create experiment", self.client.create_experiment, name)
        return str(found.experiment_id)

    def submit(self, request: SubmitRequest) -> dict[str, Any]:
        """Run the version once (unless a run of this request exists) and converge its recurring run."""
        pipeline_id, version_id = self.version_ids(request)
        experiment = self.experiment_id(request.experiment)
        outcome: dict[str, Any] = {"pipeline_id": pipeline_id, "pipeline_version_id": version_id}
        if request.run:
            runs = self._call(
                "list runs", self.client.list_runs, experiment_id=experiment, filter=by_name(request.run_name)
            )
            existing = runs.runs or []
            if existing:
                outcome.update(run_id=str(existing[0].run_id), run_started=False)
            else:
                run = self._call(
                    "create run", self.client.run_pipeline, experiment, request.run_name, params=request.parameters,
                    pipeline_id=pipeline_id, version_id=version_id,
                )  # fmt: skip
                outcome.update(run_id=str(run.run_id), run_started=True)
        outcome.update(self._schedule(request, experiment, pipeline_id, version_id))
        return outcome

    def recurring_runs(self, experiment: str) -> list[Any]:
        """Every recurring run of the experiment (all pages)."""
        found: list[Any] = []
        token = ""
        while True:
            page = self._call(
                "list recurring runs", self.client.list_recurring_runs, experiment_id=experiment, page_size=100,
                page_token=token,
            )  # fmt: skip
            found += page.recurring_runs or []
            token = page.next_page_token or ""
            if not token:
                return found

    def prune(self, request: PruneRequest) -> list[str]:
        """Delete the experiment's mlspec recurring runs that are not kept; their names."""
        deleted = []
        for recurring in self.recurring_runs(self.experiment_id(request.experiment)):
            name = str(recurring.display_name)
            if name.endswith(request.suffix) and name not in request.keep:
                self._call("delete recurring run", self.client.delete_recurring_run, recurring.recurring_run_id)
                deleted.append(name)
        return sorted(deleted)

    def _schedule(self, request: SubmitRequest, experiment: str, pipeline_id: str, version_id: str) -> dict[str, Any]:
        listing = self._call(
            "list recurring runs", self.client.list_recurring_runs, experiment_id=experiment,
            filter=by_name(request.schedule_name),
        )  # fmt: skip
        existing = (listing.recurring_runs or [None])[0]
        wanted = request.schedule
        if wanted is None:
            if existing is not None:
                self._call("delete recurring run", self.client.delete_recurring_run, existing.recurring_run_id)
            return {"schedule": "deleted" if existing is not None else "none"}
        cron = kfp_cron(wanted.cron)
        if existing is not None:
            trigger = getattr(existing.trigger, "cron_schedule", None)
            same = (
                getattr(trigger, "cron", None) == cron
                and str(existing.max_concurrency) == str(wanted.max_concurrency)
                and bool(existing.no_catchup) == wanted.no_catchup
                and getattr(existing.pipeline_version_reference, "pipeline_version_id", None) == version_id
                and dict(getattr(existing.runtime_config, "parameters", None) or {}) == request.parameters
                and str(existing.mode) != "DISABLE"
            )
            if same:
                return {"recurring_run_id": str(existing.recurring_run_id), "schedule": "unchanged"}
            self._call("delete recurring run", self.client.delete_recurring_run, existing.recurring_run_id)
        created = self._call(
            "create recurring run", self.client.create_recurring_run, experiment, request.schedule_name,
            cron_expression=cron, max_concurrency=wanted.max_concurrency, no_catchup=wanted.no_catchup,
            params=request.parameters, pipeline_id=pipeline_id, version_id=version_id, enabled=True,
        )  # fmt: skip
        return {"recurring_run_id": str(created.recurring_run_id), "schedule": "replaced" if existing else "created"}


def kfp_client() -> Any:
    """``kfp.Client`` for ``KF_PIPELINES_ENDPOINT`` (and ``KF_PIPELINES_NAMESPACE`` in multi-user mode)."""
    import kfp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(
            host=os.environ.get("KF_PIPELINES_ENDPOINT"), namespace=os.environ.get("KF_PIPELINES_NAMESPACE", "kubeflow")
        )


def main(argv: Sequence[str] | None = None, client: Any = None) -> int:
    """``python -m mlspec.runtime.submit --request JSON`` (or ``--prune JSON``): prints what was done as JSON;
    1 on a server error."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.runtime.submit", description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--request", help="the SubmitRequest as JSON (rendered into the pipeline's hook Job)")
    what.add_argument("--prune", help="the PruneRequest as JSON (rendered into the environment's hook Job)")
    args = parser.parse_args(argv)
    submitter = Submitter(client if client is not None else kfp_client())
    try:
        if args.prune is not None:
            prune = PruneRequest.from_json(args.prune)
            outcome = {"experiment": prune.experiment, "deleted": submitter.prune(prune)}
        else:
            request = SubmitRequest.from_json(args.request)
            outcome = {"pipeline": request.pipeline, "version": request.version, **submitter.submit(request)}
    except SubmitError as exc:
        sys.stderr.write(f"mlspec submit: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(outcome, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
