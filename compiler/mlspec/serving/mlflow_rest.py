"""The two registry writes the cluster's rollout controller makes, over MLflow's REST API (urllib only).

After a canary is rolled back on a cluster the registry must say so, as ``mlspec status`` makes it say on the
laptop: the served alias goes back to the version the previous revision served, and the rolled-back version is
tagged ``mlspec.rollout=rolled_back`` (a later hand-off then pins the previous version again, and the register step
never promotes a rejected version by accident). The controller runs in the serving image, without MLflow's client:
these are MLflow's documented REST calls, with ``MLFLOW_TRACKING_TOKEN`` (a bearer token) when the server wants one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

REJECTED_TAG = "mlspec.rollout"


class RegistryError(RuntimeError):
    """The tracking server refused a write or could not be reached (the reason says which)."""


class MlflowRest:
    """A tracking server's registry at ``url`` (http or https)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        """A client of ``url``; ``token`` is sent as a bearer token when given."""
        if not url.startswith(("http://", "https://")):
            raise RegistryError(f"{url.split('://', 1)[0]}:// is not an MLflow tracking server the controller can call")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _post(self, path: str, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # the environment's tracking server
                reply.read()
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"{path}: HTTP {exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}") from exc
        except OSError as exc:
            raise RegistryError(f"{path}: {getattr(exc, 'reason', None) or exc}") from exc

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``model@alias`` at ``version``."""
        self._post("registered-models/alias", {"name": model, "alias": alias, "version": version})

    def reject(self, model: str, version: str) -> None:
        """Tag ``version`` as rolled back."""
        self._post("model-versions/set-tag", {"name": model, "version": version, "key": REJECTED_TAG,
                                              "value": "rolled_back"})  # fmt: skip
