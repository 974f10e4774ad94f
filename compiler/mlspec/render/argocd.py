"""Argo CD: an Application per environment syncing its rendered manifests, and an ApplicationSet across environments.

The rendered-manifests pattern: ``mlspec render`` output is committed to the
GitOps repository at ``targets.gitops.path``; Argo CD syncs every Kubernetes object the
environment needs from there: ``kubernetes/`` (serving) and ``gitops/`` (the Kubeflow
Pipeline objects with their run-submitting hooks, the Feast jobs), and nothing else
(``kfp/`` holds pipeline IR, ``kubernetes-fallback/`` is applied by hand). Each
environment goes to its own cluster (``targets.kubernetes.cluster``); production syncs
only when asked.

``canaryTrafficPercent`` is in ``ignoreDifferences``, so the rollout controller moving it between steps never
makes an InferenceService OutOfSync (and self-heal never undoes a step). Syncs apply only OutOfSync objects
(``ApplyOutOfSyncOnly``), and ``RespectIgnoreDifferences`` is deliberately not set: an InferenceService is applied
only when a field that makes a new KServe revision changed (the pinned model's ``storageUri``, resources, ...),
and then with the rendered first step, so the new revision starts its canary at step one. With
``RespectIgnoreDifferences`` such a sync would keep the live value, absent after a promotion, and the next version
would take all traffic at once; without ``ApplyOutOfSyncOnly`` every sync of the environment would re-apply the
first step to a promoted revision, which KServe reads as a rollback to the revision before it (its
``PreviousRolledoutRevision`` rule).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mlspec.render.base import Artifact, RenderContext, RenderOutput
from mlspec.render.kserve import labels
from mlspec.render.serialize import to_yaml
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.environment import Environment

ARGOCD_NAMESPACE = "argocd"
SYNC_OPTIONS = ["CreateNamespace=false", "ServerSideApply=true", "PruneLast=true", "ApplyOutOfSyncOnly=true"]
# The folders Argo CD applies, relative to the environment's rendered folder (Argo CD's glob, braces for "or").
SYNCED = "{kubernetes/*.yaml,gitops/*.yaml}"
AUTOMATED = {"prune": True, "selfHeal": True}
IGNORE = [
    {"group": "serving.kserve.io", "kind": "InferenceService", "jsonPointers": ["/spec/predictor/canaryTrafficPercent"]}
]


def _sync_policy(env: Environment) -> dict[str, Any]:
    production = env.spec.tier == "production"
    return {
        # Production syncs only when a person (or the promotion flow) asks; others follow git automatically.
        **({} if production else {"automated": AUTOMATED}),
        "syncOptions": SYNC_OPTIONS,
        "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"}},
    }


class ArgoCDRenderer:
    """Renders Argo CD resources for environments with ``targets.gitops``."""

    name: ClassVar[str] = "argocd"
    version: ClassVar[str] = "3"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """The environment's Application, and the ApplicationSet over every GitOps environment."""
        out = RenderOutput()
        env = graph.env
        gitops, k8s = env.spec.targets.gitops, env.spec.targets.kubernetes
        if gitops is None or k8s is None:
            return out
        app_name = f"{context.project}-{graph.name}"
        application = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": app_name,
                "namespace": ARGOCD_NAMESPACE,
                "labels": labels(app_name, graph, context.project, "gitops"),
                "finalizers": ["resources-finalizer.argocd.argoproj.io"],
            },
            "spec": {
                "project": gitops.project,
                "source": {
                    "repoURL": gitops.repo_url,
                    "path": gitops.path.rstrip("/"),
                    "targetRevision": gitops.revision,
                    "directory": {"recurse": True, "include": SYNCED},
                },
                "destination": k8s.argocd_destination(),
                "syncPolicy": _sync_policy(env),
                "ignoreDifferences": IGNORE,
            },
        }
        out.artifacts.append(
            Artifact("argocd/application.yaml", to_yaml(application), self.name, (graph.environment.ref,))
        )
        appset = self._application_set(context)
        if appset is not None:
            out.artifacts.append(appset)
        return out

    def _application_set(self, context: RenderContext) -> Artifact | None:
        elements = []
        for spec in sorted(context.environments, key=lambda e: e.name):
            model = spec.model
            gitops, k8s = model.spec.targets.gitops, model.spec.targets.kubernetes
            if gitops is None or k8s is None:
                continue
            destination = k8s.argocd_destination()
            elements.append(
                {
                    "env": spec.name,
                    "repoURL": gitops.repo_url,
                    "path": gitops.path.rstrip("/"),
                    "revision": gitops.revision,
                    "project": gitops.project,
                    # Argo CD wants exactly one of name and server; an empty one counts as unset
                    "server": destination.get("server", ""),
                    "clusterName": destination.get("name", ""),
                    "namespace": k8s.namespace,
                    "automated": model.spec.tier != "production",
                }
            )
        if not elements:
            return None
        appset = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "ApplicationSet",
            "metadata": {"name": context.project, "namespace": ARGOCD_NAMESPACE},
            "spec": {
                "goTemplate": True,
                "goTemplateOptions": ["missingkey=error"],
                "generators": [{"list": {"elements": elements}}],
                "template": {
                    "metadata": {
                        "name": f"{context.project}-{{{{.env}}}}",
                        "labels": {
                            "app.kubernetes.io/part-of": context.project,
                            "app.kubernetes.io/managed-by": "mlspec",
                        },
                    },
                    "spec": {
                        "project": "{{.project}}",
                        "source": {
                            "repoURL": "{{.repoURL}}",
                            "path": "{{.path}}",
                            "targetRevision": "{{.revision}}",
                            "directory": {"recurse": True, "include": SYNCED},
                        },
                        "destination": {
                            "server": "{{.server}}",
                            "name": "{{.clusterName}}",
                            "namespace": "{{.namespace}}",
                        },
                        "syncPolicy": {"syncOptions": SYNC_OPTIONS},
                        "ignoreDifferences": IGNORE,
                    },
                },
                # production syncs on request only; the other environments follow git, as their Applications do
                "templatePatch": "{{- if .automated }}\n"
                + json.dumps({"spec": {"syncPolicy": {"automated": AUTOMATED}}}, sort_keys=True)
                + "\n{{- end }}\n",
            },
        }
        sources = tuple(f"Environment/{e['env']}" for e in elements)
        return Artifact("argocd/applicationset.yaml", to_yaml(appset), self.name, sources)
