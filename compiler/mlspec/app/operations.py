"""Day-2 operations on a local environment: status, monitor (drift -> retrain -> rollout; due batch scoring),
score (a batch Deployment now) and destroy.

These work on what apply brought up. Anything that changes the platform (a
retrain, a settled rollout) takes the environment's lock and leaves an audit
record, like apply does.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mlspec.app.cluster_rollouts import ROLLOUT_ACTOR
from mlspec.crypto.errors import CryptoError
from mlspec.errors import MlspecError
from mlspec.git.info import actor as current_actor
from mlspec.git.info import revision as current_revision
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.deployment import (
    BatchDeploymentSpec,
    Deployment,
    DeploymentSpecBase,
    EdgeDeploymentSpec,
    OnlineDeploymentSpec,
)
from mlspec.spec.training import TrainingPipeline
from mlspec.state.base import now
from mlspec.state.model import ResourceState
from mlspec.targets.base import TargetError
from mlspec.targets.local.platform import LocalPlatform, expected_hashes
from mlspec.targets.local.serving import ServerStatus

if TYPE_CHECKING:
    from mlspec.app.project import Project


# Below this many logged rows a per-feature drift verdict is mostly sampling noise (PSI's noise floor is
# about bins/rows), so the check waits for more traffic instead of retraining on noise.
MIN_ROWS = 200
BATCH_ACTIONS = ("score", "score-failed")  # monitor outcomes of scheduled batch scoring


@dataclass(frozen=True)
class PlatformStatus:
    """Everything `mlspec status` shows for a local environment."""

    environment: str
    feature_store: dict[str, Any] | None
    models: tuple[dict[str, Any], ...]
    servers: tuple[ServerStatus, ...]
    events: tuple[str, ...] = ()
    batch: tuple[dict[str, Any], ...] = ()  # per batch Deployment: schedule, sink and its last run's summary
    edge: tuple[dict[str, Any], ...] = ()  # per edge Deployment: its current package, re-verified


@dataclass(frozen=True)
class MonitorOutcome:
    """One Deployment's drift check and what followed from it."""

    deployment: str
    drift: dict[str, Any] | None
    action: str
    message: str
    retrained: dict[str, Any] | None = None
    events: tuple[str, ...] = field(default_factory=tuple)
    failed: bool = False  # a scheduled batch run failed
    scored: dict[str, str] | None = None  # a scheduled batch run's target ids (rows, model_version, sink...)

    @property
    def drifted(self) -> bool:
        """Drift crossed the threshold."""
        return bool(self.drift and self.drift.get("drift_detected"))


def local_graph(project: Project, environment: str) -> ResolvedGraph:
    """The resolved graph of a local-tier environment; MlspecError when it does not resolve or is not local."""
    from mlspec.app.paths import runs_engines

    resolution = project.resolve(environment)
    if resolution.graph is None or not resolution.ok:
        raise MlspecError(f"environment '{environment}' does not resolve", hint="run 'mlspec check' to see why")
    if not runs_engines(resolution.graph):
        raise MlspecError(
            f"'{environment}' is not a local environment: its platform runs on its cluster",
            hint="status, monitor and destroy work on local-tier environments",
        )
    return resolution.graph


def _platform(project: Project, graph: ResolvedGraph) -> LocalPlatform:
    from mlspec.app.paths import local_paths

    return LocalPlatform(local_paths(project, graph))


def _deployments(graph: ResolvedGraph, mode: type[DeploymentSpecBase] = OnlineDeploymentSpec) -> list[Deployment]:
    """The environment's Deployments of one mode (its spec model), in dependency order."""
    return [s.model for s in graph.specs(Deployment) if isinstance(s.model.spec, mode)]


def settle_rollouts(
    project: Project, graph: ResolvedGraph, platform: LocalPlatform, applied: dict[str, ResourceState]
) -> list[str]:
    """Move registry aliases for rollouts the servers finished (promoted or rolled back) and serve the outcome."""
    events: list[str] = []
    expected = expected_hashes(applied)
    for deployment in _deployments(graph):
        if f"Deployment/{deployment.metadata.name}" not in applied:
            continue
        outcome = platform.serving.settle(
            deployment, features=[], expected=expected.get(deployment.spec.model.name, {})
        )
        if outcome:
            events.append(f"{deployment.metadata.name}: {outcome}")
    return events


def status(project: Project, environment: str) -> PlatformStatus:
    """Endpoints, versions, traffic weights and health of a local environment (settling finished rollouts)."""
    from mlspec.app.paths import state_store

    graph = local_graph(project, environment)
    platform = _platform(project, graph)
    events: list[str] = []
    with state_store(project) as store:
        applied = store.read(environment).resources
        if applied and _try_lock(project, store, environment, "status"):
            try:  # finished rollouts move registry aliases: only while nobody else changes the environment
                events = settle_rollouts(project, graph, platform, applied)
                if events:
                    # the servers' analysis decided; whoever ran status only observed it: the record says both
                    observer = current_actor(None, project.root)
                    record = {"type": "rollout", "events": events, "serving": _serving(graph, platform, applied),
                              "observed_by": observer}  # fmt: skip
                    _audit(project, store, environment, record, actor=ROLLOUT_ACTOR)
            finally:
                store.release(environment)
    models = []
    for ref, resource in sorted(applied.items()):
        if resource.kind != "TrainingPipeline":
            continue
        name = resource.target_ids.get("model", ref.split("/", 1)[1])
        aliases = {}
        for alias in ("champion", "challenger"):
            found = platform.registry.version(name, alias=alias)
            aliases[alias] = found.version if found else None
        models.append({"model": name, **aliases, "device": resource.target_ids.get("device", "")})
    servers = tuple(replace(platform.serving.status(d.metadata.name), held_back=platform.serving.held_back(d))
                    for d in _deployments(graph) if f"Deployment/{d.metadata.name}" in applied)  # fmt: skip
    batch = tuple(_batch_status(platform, d) for d in _deployments(graph, BatchDeploymentSpec) if
                  f"Deployment/{d.metadata.name}" in applied)  # fmt: skip
    edge = tuple(platform.edge.status(d.metadata.name) for d in _deployments(graph, EdgeDeploymentSpec) if
                 f"Deployment/{d.metadata.name}" in applied)  # fmt: skip
    return PlatformStatus(environment, platform.features.applied(), tuple(models), servers, tuple(events), batch, edge)


def _batch_status(platform: LocalPlatform, deployment: Deployment) -> dict[str, Any]:
    from mlspec.runtime.batch import read_runs, sink_label

    batch = deployment.spec.batch if isinstance(deployment.spec, BatchDeploymentSpec) else None
    assert batch is not None  # the caller passes batch Deployments
    runs = read_runs(platform.paths.data_dir, deployment.metadata.name)  # no registry needed to read the run log
    return {
        "deployment": deployment.metadata.name,
        "model": deployment.spec.model.name,
        "entities": batch.entities,
        "sink": sink_label(batch.model_dump(mode="json")),
        "schedule": batch.schedule,
        "runs": len(runs),
        "last_run": runs[-1] if runs else None,
    }


def _try_lock(project: Project, store: Any, environment: str, operation: str) -> bool:
    from mlspec.state.base import LockedError

    try:
        store.acquire(environment, current_actor(None, project.root), operation)
    except LockedError:
        return False
    return True


def _serving(graph: ResolvedGraph, platform: LocalPlatform, applied: dict[str, ResourceState]) -> dict[str, str]:
    """What each applied Deployment serves right now, for the audit log (``audit live`` reads it)."""
    from mlspec.apply.reconciler import served_model

    served = {}
    for deployment in _deployments(graph):
        ref = f"Deployment/{deployment.metadata.name}"
        config = platform.serving.read_config(deployment.metadata.name)
        if ref in applied and config:
            versions = ",".join(f"{v['name']}={v['version']}" for v in config["variants"])
            served[ref] = served_model(applied[ref].spec, {"versions": versions})
    return served


def _audit(project: Project, store: Any, environment: str, record: dict[str, Any], *, actor: str | None = None) -> None:
    who = actor or current_actor(None, project.root)
    store.append_audit(environment, who, str(current_revision(project.root)), "", record)


def monitor(
    project: Project, environment: str, *, progress: Callable[[str], None] = lambda _: None
) -> list[MonitorOutcome]:
    """Check every monitored Deployment for drift once; retrain and roll out again where the spec says so; run the
    batch Deployments whose schedule is due. On a cluster environment: copy the rollout controllers' decisions into
    the audit log (:mod:`mlspec.app.cluster_rollouts`)."""
    from mlspec.app.paths import runs_engines, state_store
    from mlspec.targets.local.supervision import supervised

    resolution = project.resolve(environment)
    if resolution.graph is not None and resolution.ok and not runs_engines(resolution.graph):
        from mlspec.app.cluster_rollouts import import_rollout_decisions

        copied = import_rollout_decisions(project, resolution.graph, progress=progress)
        return [MonitorOutcome(name, None, "rollout-audited", message) for name, message in copied]
    graph = local_graph(project, environment)
    platform = _platform(project, graph)
    holder = current_actor(None, project.root)
    outcomes: list[MonitorOutcome] = []
    with (
        state_store(project) as store,
        store.locked(environment, holder, "monitor"),
        supervised(project.root, environment, progress),  # retraining and scoring processes are marked as apply's
    ):
        applied = dict(store.read(environment).resources)
        events = settle_rollouts(project, graph, platform, applied)
        outcomes.extend(run_due_batches(project, graph, platform, store=store, applied=applied, progress=progress))
        for deployment in _deployments(graph):
            spec = deployment.spec
            if (
                f"Deployment/{deployment.metadata.name}" not in applied
                or not isinstance(spec, OnlineDeploymentSpec)
                or spec.monitoring.drift is None
            ):
                continue
            outcome = _monitor_one(
                project, graph, platform, store=store, applied=applied, deployment=deployment, progress=progress
            )
            outcomes.append(outcome)
        if events or outcomes:
            _audit(project, store, environment, {
                "type": "monitor", "events": events,
                "drift": {o.deployment: {"detected": o.drifted, "action": o.action} for o in outcomes
                          if o.action not in BATCH_ACTIONS},
                "batch": {o.deployment: o.scored or {"failed": o.message} for o in outcomes
                          if o.action in BATCH_ACTIONS},
                "serving": _serving(graph, platform, applied),
            })  # fmt: skip
    return outcomes


def _monitor_one(
    project: Project,
    graph: ResolvedGraph,
    platform: LocalPlatform,
    *,
    store: Any,
    applied: dict[str, ResourceState],
    deployment: Deployment,
    progress: Callable[[str], None],
) -> MonitorOutcome:
    import warnings

    with warnings.catch_warnings():  # Evidently's dependencies warn about their own deprecations on import
        warnings.simplefilter("ignore")
        from mlspec.runtime.drift import DriftError, detect_drift, read_request_log

    name = deployment.metadata.name
    config_file = platform.paths.output / "monitoring" / f"{name}.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return MonitorOutcome(name, None, "none", f"no monitoring config at {config_file}; run mlspec apply")
    reference_path = project.home / config["reference"]["dataset"]
    if not reference_path.is_file():
        return MonitorOutcome(name, None, "none", f"no reference data yet ({reference_path}); train the model first")
    import pandas as pd

    features = [f["name"] for f in config["features"]]
    marker = platform.paths.monitoring / f"{name}.since"
    since = float(marker.read_text()) if marker.is_file() else None
    checked_at = time.time()
    try:
        reference = pd.read_parquet(io.BytesIO(platform.paths.runtime_context().read(reference_path)))  # sealed
        keys = platform.paths.runtime_context().key_resolver()  # the servers seal their logs with it
        sealed = platform.paths.kms_key is not None  # the servers seal every flush: a plain line is forged
        current = read_request_log(platform.serving.request_log(name), features, since=since, keys=keys, sealed=sealed)
        if current.attrs.get("unsealed_lines"):
            progress(f"{name}: rejected {current.attrs['unsealed_lines']} request-log line(s) not sealed with the "
                     "environment's key (not written by the server: tampering?)")  # fmt: skip
        progress(f"{name}: drift check on {len(current)} logged requests against {len(reference)} training rows")
        result = detect_drift(
            reference, current, deployment=name, features=features,
            method=config["drift"]["method"], threshold=config["drift"]["threshold"], out_dir=platform.paths.monitoring,
            min_rows=MIN_ROWS,
        )  # fmt: skip
    except (DriftError, CryptoError) as exc:  # CryptoError: the sealed reference data's key is missing or wrong
        return MonitorOutcome(name, None, "none", str(exc))
    # each check judges the traffic since the previous one (too little traffic does not move the window)
    platform.paths.monitoring.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(checked_at))
    summary = result.to_dict()
    if not result.drift_detected:
        return MonitorOutcome(
            name, summary, "none", f"no drift ({len(features)} features, {config['drift']['method']})"
        )
    drifted = ", ".join(result.drifted_features)
    action = config["action"]["on_drift"]
    if action != "retrain" or not config["action"]["retrain"]:
        return MonitorOutcome(name, summary, action, f"drift in {drifted}; action: {action}")
    ref = config["action"]["retrain"]
    spec = graph.require(TrainingPipeline, ref.removeprefix("TrainingPipeline/"))
    progress(f"{name}: drift in {drifted}: retraining {spec.model.model_name}")
    events: list[str] = []
    retrained = _retrain(
        platform, graph, store, applied=applied, ref=ref, pipeline=spec.model, name=spec.name, events=events
    )
    message = f"drift in {drifted}: retrained {spec.model.model_name} v{retrained['model_version']}"
    return MonitorOutcome(name, summary, "retrain", message, retrained, tuple(events))


def _retrain(
    platform: LocalPlatform,
    graph: ResolvedGraph,
    store: Any,
    *,
    applied: dict[str, ResourceState],
    ref: str,
    pipeline: TrainingPipeline,
    name: str,
    events: list[str],
) -> dict[str, str]:
    from mlspec.apply.reconciler import record_follow_ups
    from mlspec.targets.local.platform import LocalPlatformTarget

    target = LocalPlatformTarget(platform.paths, graph, {}, applied, events.append)
    try:
        ids = target.train(pipeline, name)
    except TargetError as exc:
        raise MlspecError(f"retraining {pipeline.model_name} after drift failed: {exc}") from None
    previous = applied[ref]
    resource = ResourceState(
        previous.ref, previous.fingerprint, previous.spec, previous.artifacts, ids, previous.revision, now(),
        previous.applied_by,
    )  # fmt: skip
    store.put(graph.name, resource, ("mlspec-monitor", previous.revision, "", {
        "type": "retrain", "ref": ref, "reason": "drift", "target_ids": ids,
    }))  # fmt: skip
    applied[ref] = resource
    # batch Deployments re-scored and edge packages re-built with the new version: their state follows
    record_follow_ups(target, applied, store, graph.name, ("mlspec-monitor", previous.revision, ""), cause=ref)
    return ids


def _record_batch(
    project: Project, graph: ResolvedGraph, store: Any, *, applied: dict[str, ResourceState], name: str,
    ids: dict[str, str], reason: str,
) -> None:  # fmt: skip
    """Record a batch run in state (the Deployment's target ids) with an audit record, as apply does."""
    from mlspec.apply.reconciler import update_target_ids

    ref = f"Deployment/{name}"
    actor = current_actor(None, project.root)
    record = {"type": "batch", "ref": ref, "reason": reason, "target_ids": ids}
    update_target_ids(applied, store, graph.name, ref, ids, entry=(actor, applied[ref].revision, "", record))


def run_due_batches(
    project: Project,
    graph: ResolvedGraph,
    platform: LocalPlatform,
    *,
    store: Any,
    applied: dict[str, ResourceState],
    progress: Callable[[str], None] = lambda _: None,
) -> list[MonitorOutcome]:
    """Run every applied batch Deployment whose schedule (UTC cron) fired since its last run (under the caller's
    lock); each run lands in state and the audit log. A failed run is an outcome, not an exception."""
    outcomes = []
    expected = expected_hashes(applied)
    for deployment in _deployments(graph, BatchDeploymentSpec):
        name = deployment.metadata.name
        batch = deployment.spec.batch if isinstance(deployment.spec, BatchDeploymentSpec) else None
        if f"Deployment/{name}" not in applied or batch is None or not batch.schedule:
            continue
        engine = platform.batch
        if not engine.due(deployment):
            continue
        progress(f"{name}: schedule '{batch.schedule}' is due: scoring {batch.entities}")
        try:
            ids = engine.run(deployment, engine.pipeline(name), expected=expected.get(deployment.spec.model.name, {}))
        except TargetError as exc:
            outcomes.append(MonitorOutcome(name, None, "score-failed", str(exc), failed=True))
            continue
        _record_batch(project, graph, store, applied=applied, name=name, ids=ids, reason=f"schedule {batch.schedule}")
        message = (
            f"scored {ids['rows']} rows with {ids['model']} v{ids['model_version']} into {ids['sink']} "
            f"in {ids['seconds']} s (schedule '{batch.schedule}')"
        )
        outcomes.append(MonitorOutcome(name, None, "score", message, scored=dict(ids)))
    return outcomes


def score_now(
    project: Project, environment: str, name: str, *, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Run an applied batch Deployment now (``mlspec score``); returns its run summary.

    UsageError (exit 2) for a Deployment that does not exist, is not ``mode: batch`` or is not applied yet;
    MlspecError (exit 1) when the run fails.
    """
    from mlspec.app.paths import state_store
    from mlspec.errors import UsageError
    from mlspec.spec.suggest import did_you_mean

    graph = local_graph(project, environment)
    spec = graph.find(Deployment, name)
    if spec is None:
        names = [s.name for s in graph.of_kind("Deployment")]
        guess = did_you_mean(name, names)
        raise UsageError(
            f"no Deployment named '{name}' in '{environment}'",
            hint=f"did you mean '{guess}'?" if guess else f"Deployments: {', '.join(sorted(names)) or 'none'}",
        )
    deployment = spec.model
    if not isinstance(deployment.spec, BatchDeploymentSpec):
        where = spec.document.locate(("spec", "mode")) if "mode" in deployment.spec.model_fields_set else None
        raise UsageError(
            f"Deployment '{name}' is mode: {deployment.spec.mode}{f' ({where})' if where else ''}; "
            "mlspec score runs batch Deployments",
            hint="batch Deployments: "
            + (", ".join(d.metadata.name for d in _deployments(graph, BatchDeploymentSpec)) or "none"),
        )
    platform = _platform(project, graph)
    with state_store(project) as store, store.locked(environment, current_actor(None, project.root), "score"):
        applied = dict(store.read(environment).resources)
        if spec.ref not in applied:
            raise UsageError(
                f"Deployment '{name}' is not applied in '{environment}'",
                hint=f"run 'mlspec apply --env {environment}' first",
            )
        engine = platform.batch
        progress(f"score {name} (KFP local runner)")
        try:
            ids = engine.run(
                deployment,
                engine.pipeline(name),
                expected=expected_hashes(applied).get(deployment.spec.model.name, {}),
            )
        except TargetError as exc:
            _audit(project, store, environment, {"type": "batch", "ref": spec.ref, "failed": str(exc)})
            raise MlspecError(str(exc)) from None
        _record_batch(project, graph, store, applied=applied, name=name, ids=ids, reason="mlspec score")
    summary = engine.status(name)
    assert summary is not None
    return summary
