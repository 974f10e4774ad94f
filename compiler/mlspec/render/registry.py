"""The renderers mlspec runs, by name. Each is imported only when used (kfp and feast are heavy)."""

from __future__ import annotations

import importlib

from mlspec.render.base import Renderer

# name -> "module:Class"; the order is the order of the rendered tree's folders in manifest.json.
RENDERERS: dict[str, str] = {
    "feast": "mlspec.render.feast:FeastRenderer",
    "kfp": "mlspec.render.kfp:KfpRenderer",
    "kubernetes": "mlspec.render.kserve:KServeRenderer",
    "argocd": "mlspec.render.argocd:ArgoCDRenderer",
    "gitops": "mlspec.render.gitops:GitOpsRenderer",
    "mlflow": "mlspec.render.mlflow:MlflowRenderer",
    "monitoring": "mlspec.render.monitoring:MonitoringRenderer",
    "edge": "mlspec.render.edge:EdgeRenderer",
}


def load_renderer(name: str) -> Renderer:
    """An instance of the renderer registered under ``name``."""
    module, _, cls = RENDERERS[name].partition(":")
    renderer: Renderer = getattr(importlib.import_module(module), cls)()
    return renderer
