"""Who may call the server: API keys and OIDC bearer tokens, checked before a route answers."""

from __future__ import annotations

from dataclasses import dataclass

ROUTE_KINDS = ("infer", "metadata", "health", "metrics")


@dataclass(frozen=True, slots=True)
class Denied:
    """A refused request: 401 (no or bad credentials, with a ``WWW-Authenticate`` challenge) or 403 (valid
    credentials that may not call this endpoint). ``message`` says what is wrong and never echoes a credential."""

    status: int
    message: str
    challenge: str = ""
