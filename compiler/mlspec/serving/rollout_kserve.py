"""The canary controller's actuator on KServe: JSON merge patches of an InferenceService's canaryTrafficPercent.

KServe (serverless mode) splits traffic between the last revision rolled out at 100% and the latest ready one
by ``spec.predictor.canaryTrafficPercent``: setting it moves a step, 0 pins all traffic to the previous
revision (rollback), and removing it rolls the latest revision out to 100% (promotion). Each patch also sets
the annotations ``mlspec.dev/rollout-phase`` and ``mlspec.dev/rollout-reason`` so that whoever reads the object
sees where the rollout stands. Only urllib: the controller runs in mlspec's serving image, with no Kubernetes
client library, as a service account allowed to ``get`` and ``patch`` InferenceServices.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from mlspec.serving.prometheus import Prometheus
from mlspec.serving.rollout_controller import (
    PROMOTED,
    ROLLED_BACK,
    ActuationError,
    CanaryController,
    CanaryQueries,
    run,
)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "mlspec-rollout"
PHASE, REASON = "mlspec.dev/rollout-phase", "mlspec.dev/rollout-reason"


class KubeApi:
    """The few calls the actuator makes to a Kubernetes API server (bearer token, the cluster's CA)."""

    def __init__(
        self, url: str, token: str | None = None, ca_file: str | None = None, namespace: str = "default"
    ) -> None:
        """A client of the API server at ``url``; ``namespace`` is the default one (the pod's own in-cluster)."""
        self.url = url.rstrip("/")
        self.token = token
        self.namespace = namespace
        self.ca_file = ca_file
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext | None:
        """The TLS context that trusts the cluster's CA (made on first use; None over plain HTTP)."""
        if self._context is None and self.url.startswith("https"):
            try:
                self._context = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ActuationError(f"cannot read the cluster's CA {self.ca_file}: {exc}") from exc
        return self._context

    @classmethod
    def in_cluster(cls, account: Path = SERVICE_ACCOUNT, environ: dict[str, str] | None = None) -> KubeApi:
        """The API server as a pod sees it: KUBERNETES_SERVICE_HOST/PORT, the mounted token, CA and namespace."""
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ActuationError("not in a cluster: KUBERNETES_SERVICE_HOST is not set (pass --kube-api)")
        try:
            token = (account / "token").read_text(encoding="utf-8").strip()
            namespace = (account / "namespace").read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ActuationError(f"no service account token in {account}: {exc.strerror or exc}") from exc
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", token, str(account / "ca.crt"), namespace)

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """``method`` on ``path`` with a JSON body; the decoded answer, or ActuationError saying what failed."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15, context=self.context()) as reply:  # the API server's URL
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):  # a Status object says what was wrong
                detail = json.loads(detail).get("message", detail)
            raise ActuationError(f"{method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ActuationError(f"{method} {path}: {getattr(exc, 'reason', None) or exc}") from exc


class KServeActuator:
    """Moves one InferenceService's canary traffic (an :class:`~mlspec.serving.rollout_controller.Actuator`)."""

    def __init__(self, api: KubeApi, namespace: str, name: str) -> None:
        """The actuator of InferenceService ``name`` in ``namespace``."""
        self.api = api
        self.namespace, self.name = namespace, name
        quoted = urllib.parse.quote
        self.path = f"/apis/serving.kserve.io/v1beta1/namespaces/{quoted(namespace)}/inferenceservices/{quoted(name)}"

    def _patch(self, percent: int | None, phase: str, reason: str) -> None:
        body = {
            "metadata": {"annotations": {PHASE: phase, REASON: reason}},
            "spec": {"predictor": {"canaryTrafficPercent": percent}},  # None removes the field
        }
        query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER})
        self.api.request("PATCH", f"{self.path}?{query}", body, "application/merge-patch+json")

    def record(self, action: str, reason: str, note: str, warning: bool = False) -> None:
        """A Kubernetes Event about the InferenceService (``kubectl describe`` and every event pipeline show it):
        what the controller decided and why."""
        import datetime
        import socket

        name, namespace = self.name, self.namespace
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "eventTime": stamp,
            "reportingController": "mlspec.dev/rollout",
            "reportingInstance": socket.gethostname()[:128],
            "action": action,
            "reason": reason,
            "type": "Warning" if warning else "Normal",
            "note": note[:1024],
            "regarding": {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                          "name": name, "namespace": namespace},
        }  # fmt: skip
        self.api.request("POST", f"/apis/events.k8s.io/v1/namespaces/{urllib.parse.quote(namespace)}/events", event)

    def save(self, annotations: dict[str, str]) -> None:
        """Set annotations in one patch (the watcher's saved state and decisions)."""
        query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER})
        body = {"metadata": {"annotations": annotations}}
        self.api.request("PATCH", f"{self.path}?{query}", body, "application/merge-patch+json")

    def set_canary_percent(self, percent: int) -> None:
        """Give the latest revision ``percent`` of the traffic."""
        self._patch(int(percent), "progressing", f"canary at {int(percent)}%")

    def promote(self) -> None:
        """Remove canaryTrafficPercent: KServe rolls the latest revision out to all traffic."""
        self._patch(None, "promoted", "canary promoted")

    def roll_back(self, reason: str) -> None:
        """canaryTrafficPercent 0: all traffic on the revision rolled out before, with the reason annotated."""
        self._patch(0, "rolled_back", reason)


def connect(kube_api: str | None) -> KubeApi:
    """The API server at ``kube_api``, or the pod's own cluster when None (ActuationError when not in one)."""
    return KubeApi.in_cluster() if kube_api is None else KubeApi(kube_api)


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both controllers take: Prometheus, namespace, matchers, poll interval, API server, log level."""
    parser.add_argument("--prometheus", required=True, help="Prometheus's base URL, e.g. http://prometheus:9090")
    parser.add_argument("--namespace", default=None, help="the namespace (default: the pod's own)")
    parser.add_argument(
        "--match", action="append", default=[], metavar="LABEL=VALUE",
        help="another matcher for every query, e.g. cluster=aks-prod (as your scrape configuration labels the pods)",
    )  # fmt: skip
    parser.add_argument("--poll", type=float, default=15.0, help="seconds between polls")
    parser.add_argument("--kube-api", default=None, help="the Kubernetes API's URL (default: in-cluster)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def start(args: argparse.Namespace) -> tuple[KubeApi, str, dict[str, str]] | None:
    """Logging set up from ``args``, then the API server, the namespace and the query scope; None (logged) when
    no API server can be reached."""
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        api = connect(args.kube_api)
    except ActuationError as exc:
        logging.getLogger("mlspec.rollout").error("cannot start: %s", exc)
        return None
    scope = {key: value for key, _, value in (pair.partition("=") for pair in args.match)}
    return api, args.namespace or api.namespace, scope


def main(argv: list[str] | None = None) -> int:
    """Judge one canary of a KServe InferenceService until it is decided; 0 promoted, 1 rolled back, 2 stopped."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.serving.rollout_kserve", description=__doc__)
    common_arguments(parser)
    parser.add_argument("--inference-service", required=True, help="the InferenceService whose canary is judged")
    parser.add_argument("--deployment", required=True, help="the metrics' deployment label")
    parser.add_argument("--version", required=True, help="the canary's model version (the metrics' version label)")
    parser.add_argument("--rollout", required=True, help="the Deployment's rollout as JSON (steps and analysis)")
    args = parser.parse_args(argv)
    started = start(args)
    if started is None:
        return 2
    api, namespace, scope = started
    actuator = KServeActuator(api, namespace, args.inference_service)
    queries = CanaryQueries(args.deployment, args.version, scope)
    controller = CanaryController(Prometheus(args.prometheus), queries, json.loads(args.rollout), actuator)
    run(controller, args.poll)
    return {PROMOTED: 0, ROLLED_BACK: 1}.get(controller.phase, 2)


if __name__ == "__main__":
    sys.exit(main())
