"""How an online Deployment's ``auth`` and ``endpoint`` are enforced, and refused where a target cannot.

On KServe the mesh enforces them, per Deployment (the pods carry ``mlspec.dev/deployment``):

* ``PeerAuthentication`` STRICT when ``endpoint.tls`` (or ``auth.method: mtls``): only mesh peers with a
  workload certificate reach the pods, so an ``internal`` endpoint cannot be reached from outside the mesh.
* ``RequestAuthentication`` for ``oidc``: tokens of the Environment's ``identity`` issuer, with its audiences.
* ``AuthorizationPolicy`` (ALLOW): the open routes without credentials; everything else only with a verified
  token of that issuer (``oidc``) or a verified peer certificate (``mtls``); ``private`` endpoints only from the
  Deployment's own namespace. Anything no rule allows is refused by the mesh. API keys are not the mesh's: the
  runtime in the pod (mlspec's server, :mod:`mlspec.render.kserve_runtime`) checks them.

:func:`auth_problems` refuses what no target would enforce: ``mtls`` on a local environment (the local
model server does not verify client certificates), ``oidc`` on KServe without the environment's ``identity``
(``missing-identity``), and ``api_key`` on KServe without ``api_keys`` (``missing-api-keys``: the runtime checks
the keys of that Secret; mlspec makes keys only on local environments).
"""

from __future__ import annotations

from typing import Any

from mlspec.diagnostics import Diagnostic
from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.deployment import Deployment, OnlineDeploymentSpec
from mlspec.spec.validate import ParsedSpec

DEPLOYMENT_LABEL = "mlspec.dev/deployment"
ISTIO_SECURITY = "security.istio.io/v1"
# the request paths of each open route kind, as the model server answers them
OPEN_PATHS = {
    "health": ["/v2/health/live", "/v2/health/ready", "/v2/models/*/ready", "/v2/models/*/versions/*/ready"],
    "metrics": ["/metrics"],
    "metadata": ["/v2", "/v2/models/*"],
}


def auth_problems(graph: ResolvedGraph) -> list[Diagnostic]:
    """Errors for every online Deployment whose authentication this environment's targets cannot enforce."""
    env = graph.env.spec
    found: list[Diagnostic] = []
    for spec in graph.specs(Deployment):
        online = spec.model.spec
        if not isinstance(online, OnlineDeploymentSpec) or not online.auth.required:
            continue
        method = online.auth.method
        if env.targets.serving == "local" and method == "mtls":
            found.append(
                _error(
                    spec,
                    "unsupported-by-target",
                    f"Deployment '{spec.name}' asks for auth.method: mtls, but the local model server does not verify "
                    "client certificates",
                    "use auth.method: oidc (tokens from `mlspec token`) or api_key on local environments",
                )
            )
        elif env.targets.serving == "kserve" and method == "oidc" and env.identity is None:
            found.append(
                _error(
                    spec,
                    "missing-identity",
                    f"Deployment '{spec.name}' accepts OIDC tokens, but environment '{graph.name}' names no issuer "
                    "(spec.identity): nothing could verify a token",
                    f"set spec.identity: {{issuer: https://...}} in environment '{graph.name}'",
                )
            )
        elif env.targets.serving == "kserve" and method == "api_key" and online.auth.api_keys is None:
            found.append(
                _error(
                    spec,
                    "missing-api-keys",
                    f"Deployment '{spec.name}' asks for API keys on a cluster but names no auth.api_keys: the "
                    "runtime would have no key to accept (mlspec makes keys only on local environments)",
                    "set spec.auth.api_keys: secret://<env>/<name> (a Secret holding one key per line) in the "
                    "environment's override",
                )
            )
    return found


def _error(spec: ParsedSpec[Deployment], code: str, message: str, hint: str) -> Diagnostic:
    return Diagnostic(
        code, message, spec.document.locate(("spec", "auth", "method")), path="spec.auth.method", hint=hint
    )


def mesh_policies(
    name: str, namespace: str, online: OnlineDeploymentSpec, graph: ResolvedGraph, object_labels: dict[str, str]
) -> list[dict[str, Any]]:
    """The Istio objects that enforce a Deployment's endpoint TLS and authentication (see the module doc), each
    labelled with ``object_labels``."""
    auth, endpoint = online.auth, online.endpoint
    selector = {"matchLabels": {DEPLOYMENT_LABEL: name}}
    meta = {"namespace": namespace, "labels": object_labels}
    strict = endpoint.tls or (auth.required and auth.method == "mtls")
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": ISTIO_SECURITY,
            "kind": "PeerAuthentication",
            "metadata": {"name": name, **meta},
            "spec": {"selector": selector, "mtls": {"mode": "STRICT" if strict else "PERMISSIVE"}},
        }
    ]
    identity = graph.env.spec.identity
    oidc = auth.required and auth.method == "oidc" and identity is not None
    if oidc:
        assert identity is not None
        rule: dict[str, Any] = {"issuer": identity.issuer, "forwardOriginalToken": False}
        if identity.jwks_uri:
            rule["jwksUri"] = identity.jwks_uri
        if auth.audiences:
            rule["audiences"] = list(auth.audiences)
        documents.append(
            {
                "apiVersion": ISTIO_SECURITY,
                "kind": "RequestAuthentication",
                "metadata": {"name": name, **meta},
                "spec": {"selector": selector, "jwtRules": [rule]},
            }
        )
    documents.append(_authorization(name, online, {"name": name, **meta}, selector, oidc=oidc))
    return documents


def _authorization(
    name: str, online: OnlineDeploymentSpec, metadata: dict[str, Any], selector: dict[str, Any], *, oidc: bool
) -> dict[str, Any]:
    auth = online.auth
    source: dict[str, Any] = {}
    if online.endpoint.visibility == "private":
        source["namespaces"] = [metadata["namespace"]]
    if auth.required and oidc:
        identity_rule = {"requestPrincipals": ["*"]}  # a token the RequestAuthentication verified
    elif auth.required and auth.method == "mtls":  # a peer whose workload certificate the mesh verified
        identity_rule = {"principals": ["*"]}
    else:  # no auth, or API keys: the runtime in the pod checks them
        identity_rule = {}
    rules: list[dict[str, Any]] = [
        {"from": [{"source": {**source, **identity_rule}}]} if source or identity_rule else {}
    ]
    open_paths = [path for route in auth.open_routes for path in OPEN_PATHS[route]] if identity_rule else []
    if open_paths:
        rules.append({"to": [{"operation": {"methods": ["GET"], "paths": open_paths}}]})
    return {
        "apiVersion": ISTIO_SECURITY,
        "kind": "AuthorizationPolicy",
        "metadata": metadata,
        "spec": {"selector": selector, "action": "ALLOW", "rules": rules},
    }
