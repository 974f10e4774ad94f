"""Argo CD hand-off: each cluster environment's Application syncs its rendered manifests, valid against the CRDs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mlspec.app.project import Project
from mlspec.spec.environment import Environment
from tests.conftest import FIXTURES, REPO
from tests.k8s_schemas import validate_crd

CRDS = FIXTURES / "schemas" / "argocd"


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[Environment, dict[str, bytes]]]:
    project = Project.open(REPO)
    validation = project.validate()
    out = {}
    for name in project.environments(validation):
        resolution = project.resolve(name, validation)
        assert resolution.graph is not None
        _, result = project.render(name, ["argocd"], resolution)
        assert result is not None and result.ok, name
        out[name] = (resolution.graph.env, {a.path: a.content for a in result.artifacts})
    return out


def one(content: bytes) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(content) if d]
    return dict(doc)


def test_every_kubernetes_environment_has_an_application_on_its_rendered_manifests(
    rendered: dict[str, tuple[Environment, dict[str, bytes]]],
) -> None:
    gitops_envs = [n for n, (env, _) in rendered.items() if env.spec.targets.gitops and env.spec.targets.kubernetes]
    assert sorted(gitops_envs) == ["dev", "prod", "staging"]
    for name in gitops_envs:
        env, files = rendered[name]
        gitops, k8s = env.spec.targets.gitops, env.spec.targets.kubernetes
        assert gitops is not None and k8s is not None
        app = one(files["argocd/application.yaml"])
        # everything the environment needs: serving (kubernetes/) and pipelines and Feast jobs (gitops/)
        assert app["spec"]["source"] == {
            "repoURL": gitops.repo_url,
            "path": f"rendered/{name}",
            "targetRevision": gitops.revision,
            "directory": {"recurse": True, "include": "{kubernetes/*.yaml,gitops/*.yaml}"},
        }
        # each environment goes to its own cluster, named like its kubeconfig context
        assert app["spec"]["destination"] == {"name": f"aks-uaenorth-{name}", "namespace": k8s.namespace}
        assert app["spec"]["project"] == gitops.project
        assert ("automated" in app["spec"]["syncPolicy"]) == (env.spec.tier != "production")
        # the controller's canary steps are ignored when comparing, yet a sync that changes the model (only OutOfSync
        # objects are applied) applies the rendered first step with it: a new revision never skips its canary
        options = app["spec"]["syncPolicy"]["syncOptions"]
        assert "ApplyOutOfSyncOnly=true" in options and not [o for o in options if o.startswith("RespectIgnore")]
        assert {"group": "serving.kserve.io", "kind": "InferenceService",
                "jsonPointers": ["/spec/predictor/canaryTrafficPercent"]} in app["spec"]["ignoreDifferences"]  # fmt: skip
        assert validate_crd(app, str(CRDS / "application-crd.yaml")) == []
        appset = one(files["argocd/applicationset.yaml"])
        assert validate_crd(appset, str(CRDS / "applicationset-crd.yaml")) == []
        element = next(e for e in appset["spec"]["generators"][0]["list"]["elements"] if e["env"] == name)
        assert (element["repoURL"], element["path"], element["revision"]) == (
            gitops.repo_url,
            f"rendered/{name}",
            gitops.revision,
        )
        assert (element["clusterName"], element["server"]) == (f"aks-uaenorth-{name}", "")
        assert element["automated"] == (env.spec.tier != "production")
    assert not [p for p in rendered["local"][1] if p.startswith("argocd/")]


def test_a_wrong_application_fails_the_crd_schema(rendered: dict[str, tuple[Environment, dict[str, bytes]]]) -> None:
    app = one(rendered["prod"][1]["argocd/application.yaml"])
    app["spec"]["source"]["targetRevison"] = app["spec"]["source"].pop("targetRevision")
    assert validate_crd(app, str(CRDS / "application-crd.yaml"))


def test_the_handoff_is_documented_with_commands() -> None:
    doc = (REPO / "docs/gitops.md").read_text(encoding="utf-8")
    for heading in ("## Pull requests", "## Promotion", "## Argo CD hand-off", "## Reconciler"):
        assert heading in doc
    assert "mlspec render --env prod --pin -o render" in doc and "kind: Application" in doc and "ApplicationSet" in doc


def _goish_template(text: str, values: dict[str, Any]) -> str:
    """Argo CD's ``{{.key}}`` substitution and ``{{- if .key }}...{{- end }}`` (the only forms mlspec writes)."""
    import re

    def condition(match: re.Match[str]) -> str:
        return match.group(2) if values[match.group(1)] else ""

    text = re.sub(r"\{\{- if \.(\w+) \}\}(.*?)\{\{- end \}\}", condition, text, flags=re.S)
    return re.sub(r"\{\{\.(\w+)\}\}", lambda m: str(values[m.group(1)]), text)


def test_the_applicationset_generates_each_environments_application(
    rendered: dict[str, tuple[Environment, dict[str, bytes]]],
) -> None:
    appset = one(rendered["prod"][1]["argocd/applicationset.yaml"])
    template, patch = appset["spec"]["template"], appset["spec"]["templatePatch"]
    for element in appset["spec"]["generators"][0]["list"]["elements"]:
        generated = yaml.safe_load(_goish_template(yaml.safe_dump(template), element))
        extra = yaml.safe_load(_goish_template(patch, element) or "{}") or {}
        app = one(rendered[element["env"]][1]["argocd/application.yaml"])
        assert generated["spec"]["source"] == app["spec"]["source"]
        # Argo CD treats an empty destination field as unset: the same cluster as the Application's
        destination = {k: v for k, v in generated["spec"]["destination"].items() if v}
        assert destination == app["spec"]["destination"]
        automated = extra.get("spec", {}).get("syncPolicy", {}).get("automated")
        assert automated == app["spec"]["syncPolicy"].get("automated"), element["env"]


def test_the_cluster_is_a_url_a_name_or_derived_from_the_context() -> None:
    from mlspec.spec.environment import KubernetesTarget

    def destination(**fields: str) -> dict[str, str]:
        return KubernetesTarget.model_validate({"namespace": "ml", **fields}).argocd_destination()

    assert destination(cluster="https://10.0.0.1:6443") == {"server": "https://10.0.0.1:6443", "namespace": "ml"}
    assert destination(cluster="aks-prod", context="other") == {"name": "aks-prod", "namespace": "ml"}
    assert destination(context="aks-dev") == {"name": "aks-dev", "namespace": "ml"}
    assert destination() == {"server": "https://kubernetes.default.svc", "namespace": "ml"}
    with pytest.raises(ValueError):
        destination(cluster="http://plain.example")
