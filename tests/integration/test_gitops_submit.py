"""The GitOps hook's entry point (python -m mlspec.runtime.submit) against the KFP stand-in, with the real kfp.Client.

The request is the one rendered into the reference prod's hook Job; the pipeline version
is on the server as KFP's Kubernetes pipeline store would list the synced PipelineVersion.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from mlspec.app.project import Project
from mlspec.runtime.context import RuntimeContext
from mlspec.runtime.submit import PruneRequest, SubmitRequest, main
from tests.conftest import REPO
from tests.integration.test_cluster_targets import FakeKfp, _strict_model, serve  # noqa: F401  # serve: fixture

PIPELINE = "fraud-detector"


class FakeKfpWithRuns(FakeKfp):
    """The stand-in, also listing the runs it started (by display name), as KFP's run API does."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, dict[str, Any]] = {}

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        parsed = urlparse(url)
        path = parsed.path.removeprefix("/apis/v2beta1")
        if (method, path) == ("GET", "/runs"):
            query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
            self.requests.append({"method": method, "path": path, "query": query})
            return 200, {"runs": [r for r in self.runs.values() if self._matches(r, query.get("filter"))]}
        status, answer = super().handle(method, url, headers, body)
        if (method, path) == ("POST", "/runs"):
            self.runs[answer["run_id"]] = answer
        return status, answer

    def synced(self, pipeline: str, version: str) -> None:
        """What KFP lists once Argo CD created the Pipeline and PipelineVersion objects."""
        found = [p["pipeline_id"] for p in self.pipelines.values() if p["display_name"] == pipeline]
        pipeline_id = found[0] if found else str(uuid.uuid4())
        self.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "display_name": pipeline}
        self.versions[version] = {"pipeline_id": pipeline_id, "pipeline_version_id": version + "-id",
                                  "display_name": version}  # fmt: skip


@pytest.fixture(scope="module")
def request_json() -> str:
    project = Project.open(REPO)
    _, result = project.render("prod", ["gitops"])
    assert result is not None and result.ok
    files = {a.path: a.content for a in result.artifacts}
    job = next(d for d in yaml.safe_load_all(files[f"gitops/pipeline-{PIPELINE}.yaml"]) if d["kind"] == "Job")
    return str(job["spec"]["template"]["spec"]["containers"][0]["command"][4])


def client_for(url: str) -> Any:
    import kfp

    with pytest.warns(FutureWarning):
        return kfp.Client(host=url)


def posts(fake: FakeKfp) -> list[str]:
    return [r["path"] for r in fake.requests if r["method"] in ("POST", "DELETE")]


def test_the_hook_runs_a_new_version_once_and_schedules_it(
    serve: Any,  # noqa: F811
    request_json: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    request = SubmitRequest.from_json(request_json)
    fake = FakeKfpWithRuns()
    fake.synced(PIPELINE, request.version)
    client = client_for(serve(fake))
    assert main(["--request", request_json], client=client) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["run_started"] is True and outcome["schedule"] == "created"
    assert outcome["pipeline_version_id"] == f"{request.version}-id"
    (run,) = [r["json"] for r in fake.requests if (r["method"], r["path"]) == ("POST", "/runs")]
    _strict_model(run, "V2beta1Run")
    assert run["display_name"] == request.run_name
    assert run["pipeline_version_reference"]["pipeline_version_id"] == f"{request.version}-id"
    context = RuntimeContext.from_json(run["runtime_config"]["parameters"]["environment"])
    assert (context.environment, context.tracking_uri) == ("prod", "https://mlflow.prod.ml.internal")
    (job,) = [r["json"] for r in fake.requests if (r["method"], r["path"]) == ("POST", "/recurringruns")]
    _strict_model(job, "V2beta1RecurringRun")
    assert job["display_name"] == f"{PIPELINE}-prod-schedule", "the name mlspec apply --direct uses"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *", "KFP's 6-field cron"
    assert job["pipeline_version_reference"]["pipeline_version_id"] == f"{request.version}-id"
    # the hook again (a resync, a retried pod): nothing new starts
    fake.requests.clear()
    assert main(["--request", request_json], client=client) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["run_started"], again["schedule"]) == (False, "unchanged") and posts(fake) == []
    # the next version: one new run, and the recurring run moves to it
    newer = SubmitRequest(**{**request.__dict__, "version": f"{PIPELINE}-000000000002", "run_name": "next"})
    fake.synced(PIPELINE, newer.version)
    fake.requests.clear()
    assert main(["--request", newer.to_json()], client=client) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["run_started"] and moved["schedule"] == "replaced"
    # KFP cannot edit a recurring run: the old one is deleted and a new one created on the new version
    assert sorted(p.rsplit("/", 1)[0] if p.count("/") > 1 else p for p in posts(fake)) == [
        "/recurringruns",
        "/recurringruns",
        "/runs",
    ]
    (moved_job,) = fake.recurring.values()
    assert moved_job["pipeline_version_reference"]["pipeline_version_id"] == f"{newer.version}-id"
    # a pipeline whose schedule was removed: its recurring run is deleted
    unscheduled = SubmitRequest(**{**newer.__dict__, "schedule": None})
    assert main(["--request", unscheduled.to_json()], client=client) == 0
    assert json.loads(capsys.readouterr().out)["schedule"] == "deleted" and fake.recurring == {}


def test_a_version_the_server_never_lists_fails_with_what_to_check(
    serve: Any,  # noqa: F811
    request_json: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlspec.runtime.submit as submit

    monkeypatch.setattr(submit, "WAIT_SECONDS", 0)
    fake = FakeKfpWithRuns()
    assert main(["--request", request_json], client=client_for(serve(fake))) == 1
    err = capsys.readouterr().err
    assert f"pipeline '{PIPELINE}' version" in err and "Kubernetes" in err
    assert not [r for r in fake.requests if r["method"] == "POST"], "nothing started"


def test_the_prune_hook_deletes_only_schedules_of_pipelines_that_left(
    serve: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeKfpWithRuns()
    client = client_for(serve(fake))
    experiment = client.create_experiment("uae-bank-ml-prod").experiment_id
    for name in ("fraud-detector-prod-schedule", "old-model-prod-schedule", "someones-own-job"):
        fake.recurring[name + "-id"] = {"recurring_run_id": name + "-id", "display_name": name,
                                        "experiment_id": experiment}  # fmt: skip
    request = PruneRequest("uae-bank-ml-prod", "-prod-schedule", ("fraud-detector-prod-schedule",))
    capsys.readouterr()  # kfp printed the experiment's link
    assert main(["--prune", request.to_json()], client=client) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == ["old-model-prod-schedule"]
    assert sorted(fake.recurring) == ["fraud-detector-prod-schedule-id", "someones-own-job-id"]
