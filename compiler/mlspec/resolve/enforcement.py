"""What actually enforces an online Deployment's authentication and transport security in one environment.

Policies (``access.auth_required``) and the compliance report judge this, not the declared fields: a
``required: true`` nobody checks is no authentication. The renderers and targets enforce exactly what this says:

* local serving (every local environment): the model server checks API keys and OIDC tokens itself; it does not
  verify client certificates (``mtls`` is refused at render); ``endpoint.tls`` is TLS with a certificate of the
  environment's own CA (plain HTTP on 127.0.0.1 only when the endpoint says ``tls: false``);
* KServe environments: the mesh (Istio) verifies OIDC tokens of the environment's ``identity`` issuer and
  peer certificates, and ``endpoint.tls`` is STRICT mutual TLS between mesh workloads; API keys are checked by
  mlspec's runtime in the pod, against the keys of ``auth.api_keys``'s Secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlspec.resolve.graph import ResolvedGraph
from mlspec.spec.deployment import OnlineDeploymentSpec

MESH = "mesh (Istio)"
MODEL_SERVER = "model server"


@dataclass(frozen=True)
class EndpointEnforcement:
    """How one endpoint is protected: the authentication actually checked (``none`` when nothing checks it) and
    by what, and the transport security actually served."""

    auth: str
    auth_by: str
    tls: bool
    transport: str

    def as_input(self) -> dict[str, object]:
        """The policy input's view (``input.environment.endpoints[<deployment>]``)."""
        return {"auth": self.auth, "auth_by": self.auth_by, "tls": self.tls, "transport": self.transport}


def endpoint_enforcement(graph: ResolvedGraph, online: OnlineDeploymentSpec) -> EndpointEnforcement:
    """What checks callers of ``online`` and protects its traffic in ``graph``'s environment."""
    env = graph.env.spec
    auth = online.auth
    method = auth.method if auth.required else "none"
    if env.targets.serving == "local":
        checked: str = method if method in ("oidc", "api_key") else "none"
        tls = online.endpoint.tls
        transport = "TLS (the environment's local CA)" if tls else "plain HTTP (loopback)"
        return EndpointEnforcement(checked, MODEL_SERVER if checked != "none" else "", tls, transport)
    if method == "oidc" and env.identity is not None:
        checked, by = "oidc", f"{MESH} RequestAuthentication"
    elif method == "mtls":
        checked, by = "mtls", f"{MESH} peer certificates"
    elif method == "api_key" and auth.api_keys is not None:
        checked, by = "api_key", f"{MODEL_SERVER} (mlspec runtime)"
    else:  # no issuer, or no keys: refused at render
        checked, by = "none", ""
    strict = online.endpoint.tls or method == "mtls"
    return EndpointEnforcement(checked, by, strict, "mesh mTLS (STRICT)" if strict else "mesh (PERMISSIVE)")
