"""Kubernetes through the official client: server-side apply, read-back, readiness, labelled prune.

Objects are applied with server-side apply (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=mlspec``), Namespace first and
workloads last. Drift compares only the fields mlspec sets, so defaults a
controller fills in (KServe adds many) are never reported. Prune deletes only
objects labelled as managed by mlspec for this project and environment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from mlspec.targets.base import TargetError

FIELD_MANAGER = "mlspec"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
ENVIRONMENT = "mlspec.dev/environment"

# apply order: what others live in or refer to comes first (deletes go in reverse)
KIND_ORDER = {
    "Namespace": 0,
    "CustomResourceDefinition": 1,
    "ServiceAccount": 2,
    "Secret": 3,
    "ConfigMap": 4,
    "Role": 5,
    "RoleBinding": 6,
    "NetworkPolicy": 7,
    # the mesh's TLS and authentication policies exist before the endpoint they protect serves anyone
    "PeerAuthentication": 7,
    "RequestAuthentication": 7,
    "AuthorizationPolicy": 7,
    "ServingRuntime": 8,  # before the InferenceServices that name it
    "Service": 8,
    "PodMonitor": 8,
    "Deployment": 9,
    "InferenceService": 10,
}
# (apiVersion, kind) -> (plural, namespaced); other kinds are looked up through API discovery
KNOWN: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Service"): ("services", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("serving.kserve.io/v1beta1", "InferenceService"): ("inferenceservices", True),
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): ("servingruntimes", True),
    ("security.istio.io/v1", "PeerAuthentication"): ("peerauthentications", True),
    ("security.istio.io/v1", "RequestAuthentication"): ("requestauthentications", True),
    ("security.istio.io/v1", "AuthorizationPolicy"): ("authorizationpolicies", True),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("podmonitors", True),
}
# the namespaced kinds mlspec renders: what a prune sweep lists
PRUNED_KINDS = [k for k in KNOWN if k[1] not in ("Namespace", "Secret")]  # the rollout controller's Role too


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One object's identity: apiVersion, kind, namespace (None when cluster-scoped), name."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        """The identity of a manifest or live object."""
        meta = obj.get("metadata") or {}
        return cls(str(obj["apiVersion"]), str(obj["kind"]), meta.get("namespace"), str(meta["name"]))

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


def load_manifests(content: bytes) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML file (empty documents skipped)."""
    return [d for d in yaml.safe_load_all(content) if isinstance(d, dict) and d]


def apply_order(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects in dependency order: Namespace first, then accounts and config, workloads last (stable)."""
    return sorted(objects, key=lambda o: KIND_ORDER.get(str(o.get("kind")), len(KIND_ORDER)))


def owned_differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` differs from ``desired``, looking only at fields ``desired`` sets.

    Fields a controller or the API server adds (status, defaults, uid, extra labels)
    are not compared; a field mlspec sets that is missing or changed is.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "<root>"]
        out: list[str] = []
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else str(key)
            out.extend([sub] if key not in live else owned_differences(value, live[key], sub))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        pairs = enumerate(zip(desired, live, strict=True))
        return [d for i, (a, b) in pairs for d in owned_differences(a, b, f"{path}[{i}]")]
    return [] if _same_scalar(desired, live) else [path]


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, bool) or isinstance(live, bool) or not isinstance(desired, str | int | float):
        return False
    try:  # the API server canonicalises quantities ("1000m" -> "1", "0.5" -> "500m")
        from kubernetes.utils import parse_quantity

        return bool(parse_quantity(desired) == parse_quantity(live))
    except (ValueError, TypeError, ArithmeticError):
        return False


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def readiness(obj: dict[str, Any]) -> tuple[bool, str]:
    """Whether a live object is ready, and if not, which condition says why (with its reason)."""
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    observed, generation = status.get("observedGeneration"), meta.get("generation")
    if kind == "Deployment":
        if generation is not None and (observed is None or observed < generation):
            return False, f"observedGeneration {observed} has not caught up with generation {generation}"
        return _condition_true(obj, "Available")
    if kind == "InferenceService" or _condition(obj, "Ready") is not None:
        return _condition_true(obj, "Ready")
    if kind == "Namespace" and status.get("phase") not in (None, "Active"):
        return False, f"phase is {status.get('phase')}"
    return True, "ready"


def _condition_true(obj: dict[str, Any], kind: str) -> tuple[bool, str]:
    cond = _condition(obj, kind)
    if cond is None:
        return False, f"condition {kind} not reported yet"
    if cond.get("status") == "True":
        return True, f"condition {kind} is True"
    detail = f"condition {kind} is {cond.get('status')} (reason: {cond.get('reason') or 'none given'})"
    return False, detail + (f": {cond['message']}" if cond.get("message") else "")


def selector(labels: dict[str, str]) -> str:
    """A label selector string matching every label given."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def managed_labels(project: str, environment: str) -> dict[str, str]:
    """The labels every object mlspec manages for one project and environment carries (the prune selector)."""
    return {MANAGED_BY: "mlspec", PART_OF: project, ENVIRONMENT: environment}


class KubernetesApplier:
    """Applies, reads, waits on and deletes objects through one API server.

    ``api_client`` is a ``kubernetes.client.ApiClient``; without one, the kubeconfig
    ``context`` (or the default context, or the in-cluster service account) is used.
    """

    def __init__(
        self,
        api_client: Any = None,
        *,
        context: str | None = None,
        force: bool = False,
        dry_run: bool = False,
        timeout: float = 300.0,
        poll: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api_client
        self.context = context
        self.force = force
        self.dry_run = dry_run
        self.timeout = timeout
        self.poll = poll
        self.sleep = sleep
        self._discovered: dict[tuple[str, str], tuple[str, bool]] = {}

    @property
    def api(self) -> Any:
        """The ``ApiClient`` (kubeconfig context, else in-cluster config), made on first use."""
        if self._api is None:
            from kubernetes import client, config

            try:
                self._api = config.new_client_from_config(context=self.context)
            except (config.ConfigException, OSError) as exc:
                try:
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    where = f"context '{self.context}'" if self.context else "the current context"
                    raise TargetError(
                        f"no Kubernetes credentials: kubeconfig {where} failed ({exc}) and not running in a cluster"
                    ) from None
                self._api = client.ApiClient(configuration)
        return self._api

    # -- HTTP ----------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """One API call; the decoded JSON answer, or None on 404."""
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise TargetError(f"{method} {path}: HTTP {exc.status} {_api_message(exc.body) or exc.reason}") from None
        except (HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TargetError(f"{method} {path}: cannot reach the API server: {reason}") from None
        data = response.data
        return json.loads(data) if data else {}

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) for a kind: the built-in table, else API discovery."""
        key = (api_version, kind)
        if key in KNOWN:
            return KNOWN[key]
        if key not in self._discovered:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            listing = self.request("GET", base) or {}
            for item in listing.get("resources", []):
                if item.get("kind") == kind and "/" not in item.get("name", ""):
                    self._discovered[key] = (item["name"], bool(item.get("namespaced")))
                    break
            else:
                raise TargetError(f"the cluster does not serve {api_version} {kind} (is its CRD installed?)")
        return self._discovered[key]

    def path(self, ref: ObjectRef, *, named: bool = True) -> str:
        """The REST path of an object (or of its collection)."""
        plural, namespaced = self.resource(ref.api_version, ref.kind)
        base = f"/api/{ref.api_version}" if "/" not in ref.api_version else f"/apis/{ref.api_version}"
        if namespaced:
            if not ref.namespace:
                raise TargetError(f"{ref}: a namespaced kind needs metadata.namespace")
            base += f"/namespaces/{ref.namespace}"
        return f"{base}/{plural}" + (f"/{ref.name}" if named else "")

    # -- operations ----------------------------------------------------------------------------------

    def apply(self, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Server-side apply each object in dependency order; returns what the server answered."""
        query = [("fieldManager", FIELD_MANAGER)]
        if self.force:
            query.append(("force", "true"))
        if self.dry_run:
            query.append(("dryRun", "All"))
        live = []
        for obj in apply_order(objects):
            ref = ObjectRef.of(obj)
            try:
                answer = self.request("PATCH", self.path(ref), query, obj, "application/apply-patch+yaml")
            except TargetError as exc:
                hint = " (another field manager owns these fields; apply with force to take them over)"
                raise TargetError(f"apply {ref}: {exc}" + (hint if "HTTP 409" in str(exc) else "")) from None
            if answer is None:
                raise TargetError(f"apply {ref}: HTTP 404 (does its namespace exist?)")
            live.append(answer)
        return live

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        return self.request("GET", self.path(ref))

    def delete(self, ref: ObjectRef, labels: dict[str, str]) -> bool:
        """Delete an object only if it carries every one of ``labels``; True when a delete was sent."""
        live = self.get(ref)
        if live is None:
            return False
        have = (live.get("metadata") or {}).get("labels") or {}
        if any(have.get(k) != v for k, v in labels.items()):
            return False  # not ours (or another project's / environment's): never deleted
        query = [("propagationPolicy", "Background")] + ([("dryRun", "All")] if self.dry_run else [])
        self.request("DELETE", self.path(ref), query)
        return True

    def list_labelled(self, labels: dict[str, str], namespace: str) -> list[ObjectRef]:
        """Objects of the kinds mlspec renders, in ``namespace``, carrying every one of ``labels``."""
        found: list[ObjectRef] = []
        for api_version, kind in PRUNED_KINDS:
            ref = ObjectRef(api_version, kind, namespace, "")
            try:
                listing = self.request("GET", self.path(ref, named=False), [("labelSelector", selector(labels))])
            except TargetError as exc:
                if "HTTP 403" in str(exc):
                    raise
                continue  # a kind the cluster does not serve (KServe not installed): nothing of it to prune
            for item in (listing or {}).get("items", []):
                name = (item.get("metadata") or {}).get("name")
                if name:
                    found.append(ObjectRef(api_version, kind, namespace, name))
        return found

    def prune(self, labels: dict[str, str], namespace: str, wanted: set[ObjectRef]) -> list[ObjectRef]:
        """Delete labelled objects in ``namespace`` that are not ``wanted``; returns what was deleted."""
        doomed = [ref for ref in self.list_labelled(labels, namespace) if ref not in wanted]
        for ref in sorted(doomed, key=lambda r: -KIND_ORDER.get(r.kind, len(KIND_ORDER))):
            self.delete(ref, labels)
        return doomed

    def wait_ready(self, refs: Iterable[ObjectRef], timeout: float | None = None) -> None:
        """Poll until every object is ready; on timeout the error names the object, condition and reason."""
        pending = list(refs)
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            waiting: list[tuple[ObjectRef, str]] = []
            for ref in pending:
                live = self.get(ref)
                ready, detail = readiness(live) if live is not None else (False, "it does not exist")
                if not ready:
                    waiting.append((ref, detail))
            if not waiting:
                return
            if time.monotonic() >= deadline:
                ref, detail = waiting[0]
                more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
                raise TargetError(f"{ref} not ready after {limit:.0f}s: {detail}{more}")
            pending = [ref for ref, _ in waiting]
            self.sleep(self.poll)


def _api_message(body: Any) -> str:
    """The message of a Kubernetes Status answer, when the body is one."""
    try:
        data = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return str(body or "")[:300]
    return str(data.get("message", "")) if isinstance(data, dict) else ""
