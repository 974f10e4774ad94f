"""``mlspec login --env E``: a person proves who they are to the organisation's identity provider.

OAuth 2.0 Device Authorization Grant (RFC 8628) against the environment's ``access.login`` issuer (its
``device_authorization_endpoint`` and ``token_endpoint`` from the OpenID discovery document): mlspec shows the
verification URL and the user code, the person approves in their browser (with the provider's MFA and
conditional access), and mlspec polls the token endpoint (``authorization_pending``, ``slow_down`` honoured) until
it gets the ID token. The token is verified before it is kept (signature, issuer, audience = the client id,
expiry), then written 0600 in the user's cache (:func:`mlspec.identity.login_file`); plan and apply verify it
again on every use, and an expired one proves nothing (log in again).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlspec.errors import MlspecError, UsageError
from mlspec.identity import Identity, login_file, person

if TYPE_CHECKING:
    from mlspec.app.project import Project

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPE = "openid email profile"


def _post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a form to one of the provider's endpoints (https, or http on loopback); the status and JSON answer."""
    parts = urllib.parse.urlsplit(url)
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost"))):
        raise MlspecError(f"the identity provider's endpoint {url} is not https")
    request = urllib.request.Request(
        url, urllib.parse.urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as reply:
            return reply.status, json.loads(reply.read(1024 * 1024))
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read(64 * 1024))
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError) as exc:
        raise MlspecError(f"cannot reach the identity provider at {url}: {exc}") from None


def login(
    project: Project,
    environment: str,
    *,
    show: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> Identity:
    """Log the person in to ``environment``'s identity provider and keep their ID token; who they now are."""
    from mlspec.app.audit_trail import environment_spec
    from mlspec.private import private_files
    from mlspec.serving.auth import discovery_uri, read_document

    env = environment_spec(project, environment)
    if env is None:
        raise UsageError(f"no environment '{environment}' in this project")
    settings = env.spec.access.login if env.spec.access is not None else None
    if settings is None:
        raise UsageError(
            f"environment '{environment}' names no identity provider for people (access.login)",
            hint="add access.login: {issuer: ..., client_id: ...}, or prove who acts with a signed commit",
        )
    try:
        discovery = read_document(discovery_uri(settings.issuer))
        device_endpoint, token_endpoint = discovery["device_authorization_endpoint"], discovery["token_endpoint"]
    except Exception as exc:
        raise MlspecError(f"{settings.issuer} offers no device code login: {exc}") from None
    status, grant = _post(str(device_endpoint), {"client_id": settings.client_id, "scope": SCOPE})
    if status != 200 or "device_code" not in grant:
        raise MlspecError(f"the identity provider refused the device code request: {grant.get('error', status)}")
    where = grant.get("verification_uri_complete") or grant.get("verification_uri")
    show(f"To log in, open {where} and enter the code {grant.get('user_code')}")
    token = _poll(str(token_endpoint), settings.client_id, grant, sleep)
    path = login_file(settings)
    with private_files():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"issuer": settings.issuer, "client_id": settings.client_id, "id_token": token}))
    path.chmod(0o600)
    who = person(settings)
    if who is None:
        raise MlspecError("the identity provider's ID token is already expired; check this machine's clock")
    return who


def _poll(endpoint: str, client_id: str, grant: dict[str, Any], sleep: Callable[[float], None]) -> str:
    """The ID token, once the person approved; MlspecError when they refused or the code expired."""
    interval = float(grant.get("interval", 5))
    deadline = time.monotonic() + float(grant.get("expires_in", 900))
    form = {"grant_type": DEVICE_GRANT, "device_code": str(grant["device_code"]), "client_id": client_id}
    while time.monotonic() < deadline:
        sleep(interval)
        status, answer = _post(endpoint, form)
        if status == 200 and isinstance(answer.get("id_token"), str):
            return str(answer["id_token"])
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        if error == "access_denied":
            raise MlspecError("the login was refused at the identity provider")
        if error == "expired_token":
            break
        raise MlspecError(f"the identity provider answered the login with {error or status}")
    raise MlspecError("the login code expired before it was approved; run mlspec login again")
