"""The rollout controller of a namespace: every KServe canary in it, judged from Prometheus, resumable.

``python -m mlspec.serving.rollout_watch`` runs this as the Deployment ``mlspec-rollout`` that mlspec
renders into every namespace serving a canary (``kubernetes/rollout-controller.yaml``). Each poll lists the
namespace's InferenceServices rendered by mlspec with a canary rollout (``mlspec.dev/rollout``). One is a canary in
progress when KServe's status says its latest revision is ready but not rolled out yet and ``canaryTrafficPercent``
gives it part of the traffic (1-99, or 100 at a last step it gave): that is what a new pinned version (or any change
to the predictor) makes, with the rendered first step. The canary is judged by :class:`CanaryController` with the
laptop's rules over every replica's metrics, its metrics selected by the InferenceService's name and its pinned
version (``mlspec.dev/model-version``, the labels the runtime exports).

Every decision that moves traffic leaves a Kubernetes Event on the InferenceService (``CanaryAdvanced``,
``CanaryPromoted``, ``CanaryRolledBack``, with the reason in the laptop router's words), so ``kubectl describe``,
``kubectl events`` and any event exporter show what moved and why. Its state (the revision judged, the step, when
the step and the open window began, what the step held) is saved in the annotation ``mlspec.dev/rollout-state``
after every poll, so a restarted controller resumes the step it was in instead of starting again, and a revision
once promoted or rolled back is never judged again. After a rollback the registry says so, as on the laptop
(:meth:`RolloutWatcher._restore`): the served alias back at the version the rolled-out revision serves, the canary's
version tagged ``mlspec.rollout=rolled_back``. The controller needs ``list`` and ``patch`` on
``inferenceservices``, ``create`` on ``events`` and ``get`` on Knative ``revisions`` in its namespace, and nothing else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mlspec.serving.mlflow_rest import MlflowRest, RegistryError
from mlspec.serving.prometheus import Prometheus
from mlspec.serving.rollout_controller import (
    ADVANCE,
    PROGRESSING,
    PROMOTE,
    PROMOTED,
    ROLL_BACK,
    ROLLED_BACK,
    ActuationError,
    CanaryController,
    CanaryQueries,
    CanaryState,
    Decision,
    stop_on_sigterm,
)
from mlspec.serving.rollout_kserve import KServeActuator, KubeApi, common_arguments, start

log = logging.getLogger("mlspec.rollout")
ROLLOUT_ANNOTATION = "mlspec.dev/rollout"
VERSION_ANNOTATION = "mlspec.dev/model-version"  # on the InferenceService and, pinned, on its revisions' pods
MODEL_ANNOTATION = "mlspec.dev/model-name"
ALIAS_ANNOTATION = "mlspec.dev/model-alias"
STATE_ANNOTATION = "mlspec.dev/rollout-state"
# every decision that moved traffic, newest last (at most KEPT): what `mlspec monitor` copies into the audit log
DECISIONS_ANNOTATION = "mlspec.dev/rollout-decisions"
KEPT = 50
MANAGED = "app.kubernetes.io/managed-by=mlspec"
# the Kubernetes Event each decision that moved traffic leaves on the InferenceService: (action, reason)
EVENTS = {
    ADVANCE: ("Advance", "CanaryAdvanced"),
    PROMOTE: ("Promote", "CanaryPromoted"),
    ROLL_BACK: ("RollBack", "CanaryRolledBack"),
}


@dataclass(frozen=True)
class Canary:
    """A canary in progress: its InferenceService, revision, version, rollout, and the state saved for it."""

    name: str
    revision: str
    version: str
    rollout: dict[str, Any]
    saved: CanaryState | None
    rolled_out: str = ""  # the revision serving the rest of the traffic (KServe's latestRolledoutRevision)
    model: str = ""  # the registered model and the alias the InferenceService serves ("" when pinned by version)
    alias: str = ""
    history: tuple[dict[str, Any], ...] = ()  # the decisions recorded before (DECISIONS_ANNOTATION)


def canary_of(isvc: dict[str, Any]) -> Canary | None:
    """The InferenceService's canary in progress, or None (no canary rollout, nothing rolling out, the latest
    revision not ready yet, or already decided)."""
    meta = isvc.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    try:
        rollout = json.loads(annotations.get(ROLLOUT_ANNOTATION) or "{}")
        saved = json.loads(annotations.get(STATE_ANNOTATION) or "{}")
    except ValueError:
        log.warning(
            "%s: unreadable %s or %s annotation; skipped", meta.get("name"), ROLLOUT_ANNOTATION, STATE_ANNOTATION
        )
        return None
    history = _history(str(meta.get("name", "")), annotations.get(DECISIONS_ANNOTATION))
    if rollout.get("strategy") != "canary":
        return None
    predictor = ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}
    ready, rolled = predictor.get("latestReadyRevision"), predictor.get("latestRolledoutRevision")
    percent = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    if not ready or not rolled or ready == rolled or predictor.get("latestCreatedRevision") != ready:
        return None
    mine = saved.get("revision") == ready
    if mine and saved.get("phase") in (PROMOTED, ROLLED_BACK):
        return None
    # 0 is rolled back and no value rolls out to everyone; 100 is a last step this controller gave and still judges
    if not isinstance(percent, int) or not 0 < percent <= (100 if mine else 99):
        return None
    state = CanaryState(**saved["state"]) if mine and isinstance(saved.get("state"), dict) else None
    return Canary(
        str(meta.get("name", "")), str(ready), str(annotations.get(VERSION_ANNOTATION, "")), rollout, state,
        rolled_out=str(rolled), model=str(annotations.get(MODEL_ANNOTATION, "")),
        alias=str(annotations.get(ALIAS_ANNOTATION, "")), history=history,
    )  # fmt: skip


def _history(name: str, raw: str | None) -> tuple[dict[str, Any], ...]:
    """The decisions recorded on an InferenceService; an unreadable list is logged and started again (the audit
    import then says records are missing)."""
    try:
        history = json.loads(raw or "[]")
    except ValueError:
        history = None
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        log.warning("%s: unreadable %s annotation; starting a new one", name, DECISIONS_ANNOTATION)
        return ()
    return tuple(history)


class RolloutWatcher:
    """Judges every canary of one namespace on each :meth:`poll`."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        prometheus: Prometheus,
        scope: dict[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        registry: MlflowRest | None = None,
    ) -> None:
        """A watcher of ``namespace`` through ``api``, asking ``prometheus`` (``scope``: extra query matchers);
        after a rollback it points the alias back and rejects the version in ``registry`` (when given)."""
        self.registry = registry
        self.api = api
        self.namespace = namespace
        self.prometheus = prometheus
        self.scope = dict(scope or {})
        self.clock = clock
        quoted = urllib.parse.quote
        self.path = f"/apis/serving.kserve.io/v1beta1/namespaces/{quoted(namespace)}/inferenceservices"

    def poll(self) -> list[Decision]:
        """One pass over the namespace: each canary in progress judged once and its state saved."""
        try:
            listed = self.api.request("GET", f"{self.path}?{urllib.parse.urlencode({'labelSelector': MANAGED})}")
        except ActuationError as exc:
            log.error("cannot list InferenceServices in %s: %s", self.namespace, exc)
            return []
        decisions = []
        for isvc in listed.get("items") or []:
            canary = canary_of(isvc)
            if canary is not None:
                decisions.append(self._judge(canary))
        return decisions

    def _judge(self, canary: Canary) -> Decision:
        actuator = KServeActuator(self.api, self.namespace, canary.name)
        queries = CanaryQueries(canary.name, canary.version, {"namespace": self.namespace, **self.scope})
        controller = CanaryController(self.prometheus, queries, canary.rollout, actuator, self.clock)
        if canary.saved is not None:  # resume the step this revision was in
            controller.state, controller.phase = canary.saved, PROGRESSING
        decision = controller.once()
        if decision.action in EVENTS:  # it moved traffic (a failed patch comes back as a wait)
            action, reason = EVENTS[decision.action]
            note = f"{canary.name} v{canary.version} ({canary.revision}): {decision.reason}"
            try:
                actuator.record(action, reason, note, warning=decision.action == ROLL_BACK)
            except ActuationError as exc:  # the decision stands; the log and annotations still say it
                log.error("%s: event not recorded: %s", canary.name, exc)
        if decision.action == ROLL_BACK:
            self._restore(actuator, canary)
        saved = {"revision": canary.revision, "version": canary.version, "phase": controller.phase,
                 "state": asdict(controller.state)}  # fmt: skip
        annotations = {STATE_ANNOTATION: json.dumps(saved, sort_keys=True)}
        if decision.action in EVENTS:
            entry = {"at": round(self.clock(), 3), "revision": canary.revision, "version": canary.version,
                     "action": decision.action, "percent": decision.percent, "reason": decision.reason}  # fmt: skip
            annotations[DECISIONS_ANNOTATION] = json.dumps([*canary.history, entry][-KEPT:], sort_keys=True)
        try:  # one patch: the state and the decision it led to are saved together or not at all
            actuator.save(annotations)
        except ActuationError as exc:  # the next poll judges from the last saved state again
            log.error("%s: state not saved: %s", canary.name, exc)
        return decision

    def _restore(self, actuator: KServeActuator, canary: Canary) -> None:
        """After a rollback, the registry says so as on the laptop: the alias back at the version the rolled-out
        revision serves, the canary's version rejected. A failure is a Warning event and the log, never a retry of
        the rollback itself."""
        if self.registry is None or not canary.model:
            return
        quoted = urllib.parse.quote
        path = f"/apis/serving.knative.dev/v1/namespaces/{quoted(self.namespace)}/revisions/{quoted(canary.rolled_out)}"
        try:
            revision = self.api.request("GET", path)
            previous = str(((revision.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION, ""))
            self.registry.reject(canary.model, canary.version)
            moved = ""
            if canary.alias and previous and previous != canary.version:
                self.registry.set_alias(canary.model, canary.alias, previous)
                moved = f"; {canary.model}@{canary.alias} back at v{previous}"
            note = f"{canary.model} v{canary.version} tagged mlspec.rollout=rolled_back{moved}"
            actuator.record("RestoreRegistry", "RegistryRestored", note)
            log.info("%s: %s", canary.name, note)
        except (ActuationError, RegistryError) as exc:
            log.error("%s: the registry was not restored after the rollback: %s", canary.name, exc)
            with contextlib.suppress(ActuationError):
                actuator.record("RestoreRegistry", "RegistryNotRestored", str(exc), warning=True)


def watch(watcher: RolloutWatcher, poll: float, stop: threading.Event | None = None) -> None:
    """Poll every ``poll`` seconds until ``stop`` is set or SIGTERM arrives (traffic stays where it is)."""
    with stop_on_sigterm(stop or threading.Event(), "canaries keep their traffic and state") as stopping:
        watcher.poll()
        while not stopping.wait(poll):
            watcher.poll()


def main(argv: list[str] | None = None) -> int:
    """Judge every canary of the namespace until SIGTERM (0), or 2 when no API server can be reached."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.serving.rollout_watch", description=__doc__)
    common_arguments(parser)
    parser.add_argument(
        "--registry", default=os.environ.get("MLSPEC_REGISTRY"),
        help="the MLflow tracking server whose aliases a rollback moves back (default: $MLSPEC_REGISTRY; "
        "$MLFLOW_TRACKING_TOKEN is sent as a bearer token)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    started = start(args)
    if started is None:
        return 2
    api, namespace, scope = started
    registry = None
    if args.registry:
        try:
            registry = MlflowRest(args.registry, os.environ.get("MLFLOW_TRACKING_TOKEN"))
        except RegistryError as exc:
            log.error("rollbacks will not move registry aliases: %s", exc)
    watch(RolloutWatcher(api, namespace, Prometheus(args.prometheus), scope, registry=registry), args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
