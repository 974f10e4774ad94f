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
        assert app["spec"]["source"] == {
            "repoURL": gitops.repo_url,
            "path": f"{gitops.path}/kubernetes",
            "targetRevision": gitops.revision,
        }
        assert app["spec"]["source"]["path"] == f"rendered/{name}/kubernetes"
        assert app["spec"]["destination"] == {"server": k8s.cluster, "namespace": k8s.namespace}
        assert app["spec"]["project"] == gitops.project
        assert ("automated" in app["spec"]["syncPolicy"]) == (env.spec.tier != "production")
        assert validate_crd(app, str(CRDS / "application-crd.yaml")) == []
        appset = one(files["argocd/applicationset.yaml"])
        assert validate_crd(appset, str(CRDS / "applicationset-crd.yaml")) == []
        element = next(e for e in appset["spec"]["generators"][0]["list"]["elements"] if e["env"] == name)
        assert (element["repoURL"], element["path"], element["revision"]) == (
            gitops.repo_url,
            f"{gitops.path}/kubernetes",
            gitops.revision,
        )
    assert not [p for p in rendered["local"][1] if p.startswith("argocd/")]


def test_a_wrong_application_fails_the_crd_schema(rendered: dict[str, tuple[Environment, dict[str, bytes]]]) -> None:
    app = one(rendered["prod"][1]["argocd/application.yaml"])
    app["spec"]["source"]["targetRevison"] = app["spec"]["source"].pop("targetRevision")
    assert validate_crd(app, str(CRDS / "application-crd.yaml"))


def test_the_handoff_is_documented_with_commands() -> None:
    doc = (REPO / "docs/gitops.md").read_text(encoding="utf-8")
    for heading in ("## Pull requests", "## Promotion", "## Argo CD hand-off", "## Reconciler"):
        assert heading in doc
    assert "mlspec render --env prod -o render" in doc and "kind: Application" in doc and "ApplicationSet" in doc
