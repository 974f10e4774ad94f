"""What the in-cluster rollout controllers decided, copied into the environment's hash-chained audit log.

On a cluster the canaries are moved by ``mlspec.serving.rollout_watch``, which runs in the environment's
namespace and cannot reach the state database (nor should it hold its credentials). It keeps every decision that
moved traffic on the InferenceService itself (``mlspec.dev/rollout-decisions``, the newest 50) besides the
Kubernetes Events. ``mlspec monitor --env <cluster environment>`` (run on a schedule by the GitOps workflow, as on
the laptop) reads them and appends the ones not yet in the audit log, under the actor ``mlspec-rollout`` and
observed by whoever ran it, so ``mlspec audit log`` shows the cluster's rollouts as it shows the laptop's. When the
controller has dropped decisions that were never copied, the record says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlspec.errors import MlspecError
from mlspec.git.info import actor as current_actor
from mlspec.git.info import revision as current_revision
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.deployment import CanaryRollout, Deployment, OnlineDeploymentSpec
from mlspec.targets.base import TargetError

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.targets.cluster.kubernetes import KubernetesApplier

from mlspec.serving.rollout_watch import DECISIONS_ANNOTATION, KEPT

ROLLOUT_ACTOR = "mlspec-rollout"  # the audit actor of what a rollout's analysis decided, not a person


def canary_deployments(graph: ResolvedGraph) -> list[str]:
    """The environment's online Deployments rolled out as canaries (the ones a controller moves)."""
    return [
        s.model.metadata.name
        for s in graph.specs(Deployment)
        if isinstance(s.model.spec, OnlineDeploymentSpec) and isinstance(s.model.spec.rollout, CanaryRollout)
    ]


def recorded_decisions(isvc: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The decisions the controller recorded on an InferenceService (none when it has none or they are unreadable)."""
    raw = (((isvc or {}).get("metadata") or {}).get("annotations") or {}).get(DECISIONS_ANNOTATION)
    try:
        decisions = json.loads(raw or "[]")
    except ValueError:
        return []
    if not isinstance(decisions, list):
        return []
    return [d for d in decisions if isinstance(d, dict) and isinstance(d.get("at"), (int, float))]


def last_imported(audit: list[Any], deployment: str) -> float | None:
    """When the newest decision already copied for ``deployment`` was made (None when none was)."""
    times = [
        float(d["at"])
        for entry in audit
        if entry.record.get("type") == "rollout" and entry.record.get("source") == "cluster"
        and entry.record.get("deployment") == deployment
        for d in entry.record.get("decisions", [])
    ]  # fmt: skip
    return max(times, default=None)


def new_decisions(decisions: list[dict[str, Any]], since: float | None) -> tuple[list[dict[str, Any]], bool]:
    """The decisions made after ``since``, and whether some in between are lost (the controller keeps only the
    newest ``KEPT``, and all it keeps are new)."""
    fresh = [d for d in decisions if since is None or float(d["at"]) > since]
    lost = bool(fresh) and len(fresh) == len(decisions) and len(decisions) >= KEPT
    return fresh, lost


def import_rollout_decisions(
    project: Project,
    graph: ResolvedGraph,
    *,
    kubernetes: KubernetesApplier | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[tuple[str, str]]:
    """Copy the rollout controllers' new decisions of ``graph``'s environment into its audit log: one record per
    InferenceService that has new ones, under the environment's lock. Returns (Deployment, what was copied)."""
    from mlspec.app.paths import state_store
    from mlspec.targets.cluster.kubernetes import KubernetesApplier, ObjectRef

    k8s = graph.env.spec.targets.kubernetes
    names = canary_deployments(graph)
    if k8s is None or graph.env.spec.targets.serving != "kserve" or not names:
        progress(f"{graph.name}: no canary on KServe, so no rollout controller to read")
        return []
    applier = kubernetes or KubernetesApplier(context=k8s.context)
    environment, observer = graph.name, current_actor(None, project.root)
    outcomes: list[tuple[str, str]] = []
    with state_store(project) as store, store.locked(environment, observer, "monitor"):
        audit = store.audit(environment)
        for name in names:
            ref = ObjectRef("serving.kserve.io/v1beta1", "InferenceService", k8s.namespace, name)
            try:
                live = applier.get(ref)
            except TargetError as exc:
                raise MlspecError(f"cannot read {ref} from the cluster: {exc}") from None
            fresh, lost = new_decisions(recorded_decisions(live), last_imported(audit, name))
            if not fresh:
                continue
            record = {"type": "rollout", "source": "cluster", "deployment": name, "object": str(ref),
                      "uid": (live or {}).get("metadata", {}).get("uid", ""), "decisions": fresh,
                      "observed_by": observer, "missing_before": lost}  # fmt: skip
            store.append_audit(environment, ROLLOUT_ACTOR, str(current_revision(project.root)), "", record)
            steps = "; ".join(f"{d.get('action')} v{d.get('version')} to {d.get('percent')}%" for d in fresh)
            gap = " (older decisions were dropped by the controller before they were copied)" if lost else ""
            outcomes.append((name, f"{len(fresh)} decision(s): {steps}{gap}"))
    return outcomes
