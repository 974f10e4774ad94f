"""Access rules of an Environment: who may plan and apply, how who acts is proven, the approval a change needs, and
what a waiver needs to count (see docs/access.md and docs/policies.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from mlspec.spec.base import FieldError, Name, StrictModel

HttpUrlText = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")]

Principal = Annotated[
    str,
    StringConstraints(pattern=r"^[^\s,]{1,320}$"),
    Field(description="A user (git email, CI identity such as ci@github, --as name) or a group of access.groups."),
]


class Approval(StrictModel):
    """The approval recorded in git that a change needs before it is applied (see docs/access.md)."""

    required: bool = Field(default=True, description="Whether changes need the approval before they are applied.")
    method: Literal["signed_commit", "merge"] = Field(
        default="merge",
        description="signed_commit: HEAD, or an empty approval commit on top of the change, is GPG-signed by an "
        "approver's key; merge: HEAD merges the change (second parent) and its author or committer is an approver.",
    )
    approvers: list[str] = Field(
        min_length=1,
        description="signed_commit: the approvers' GPG key fingerprints (40 upper-case hex digits); "
        "merge: users or groups of access.groups.",
    )
    min: int = Field(default=1, ge=1, description="How many different approvers must have approved.")

    @model_validator(mode="after")
    def _approvers_fit_method(self) -> Approval:
        import re

        if len(set(self.approvers)) != len(self.approvers):
            raise FieldError("approvers", "an approver is listed twice")
        if self.method == "signed_commit":
            for i, approver in enumerate(self.approvers):
                if not re.fullmatch(r"[0-9A-F]{40}", approver):
                    raise FieldError(
                        ("approvers", i),
                        f"{approver!r} is not a GPG key fingerprint; signed_commit approvers are 40 upper-case "
                        "hex digits (gpg --list-keys --with-colons)",
                    )
        elif self.min > 1:
            raise FieldError("min", "a merge records one approval; use method signed_commit for min > 1")
        if self.min > len(self.approvers):
            raise FieldError("min", f"min is {self.min} but only {len(self.approvers)} approver(s) are listed")
        return self


GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{40}$")]


class CiIdentity(StrictModel):
    """The CI whose OIDC ID tokens prove that a job of this repository acts (GitHub Actions by default)."""

    issuer: HttpUrlText = Field(
        default=GITHUB_ACTIONS_ISSUER,
        description="The token issuer, exactly as tokens carry it in 'iss' (https; http only on loopback).",
    )
    jwks_uri: HttpUrlText | None = Field(
        default=None, description="Where its signing keys are; omit to read the issuer's discovery document."
    )
    audience: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        default="mlspec", description="The audience mlspec requests and requires ('aud')."
    )
    repository: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] = Field(
        description="The repository (owner/name) whose jobs may act ('repository' claim)."
    )
    ref: str = Field(default="refs/heads/main", description="The branch they must run on ('ref' claim).")
    environment: str | None = Field(
        default=None,
        description="The protected CI environment (with required reviewers) the job must run in ('environment' "
        "claim). On a production environment approving by merge, a job of it is the approval.",
    )
    principal: Principal = Field(
        default="ci@github", description="The name a proven CI job acts as in plan, apply and the audit log."
    )

    @model_validator(mode="after")
    def _https_unless_loopback(self) -> CiIdentity:
        https_unless_loopback(self, ("issuer", "jwks_uri"))
        return self


def https_unless_loopback(model: StrictModel, names: tuple[str, ...]) -> None:
    """FieldError when one of ``names`` is an http URL to anything but loopback (a test issuer)."""
    for name in names:
        value = getattr(model, name)
        host = value.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0] if value else ""
        if value and value.startswith("http://") and host not in ("127.0.0.1", "localhost", "[::1]"):
            raise FieldError(name, f"{name} must be https (http only on loopback, for a test issuer)")


class PeopleLogin(StrictModel):
    """The organisation's identity provider people log in to (OAuth 2.0 device authorization, RFC 8628)."""

    issuer: HttpUrlText = Field(
        description="The OpenID Connect issuer, exactly as ID tokens carry it in 'iss' (https; http only on "
        "loopback), e.g. Entra ID's 'https://login.microsoftonline.com/<tenant>/v2.0'."
    )
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="mlspec's public client registered with the provider (device code flow enabled); the ID "
        "token's audience."
    )
    claim: Literal["email", "preferred_username", "upn"] = Field(
        default="email", description="The ID token claim that names the person as access rules do."
    )

    @model_validator(mode="after")
    def _https_unless_loopback(self) -> PeopleLogin:
        https_unless_loopback(self, ("issuer",))
        return self


class Access(StrictModel):
    """Who may plan and apply this environment, and the approval a change needs (absent: everyone, none)."""

    plan: list[Principal] | None = Field(
        default=None, description="Who may plan; omitted: everyone. Whoever may apply may also plan."
    )
    apply: list[Principal] | None = Field(
        default=None, description="Who may apply and destroy; omitted: everyone. [] means nobody."
    )
    groups: dict[Name, list[Principal]] = Field(
        default_factory=dict, description="Named sets of users that plan, apply and merge approvers may list."
    )
    approval: Approval | None = Field(
        default=None, description="The approval a change needs before it is applied; omit for none."
    )
    ci: CiIdentity | None = Field(
        default=None,
        description="The CI identity (OIDC ID tokens, e.g. GitHub Actions') that proves a job acts; outside the "
        "local tier a restricted operation needs a proven identity, never --as or MLSPEC_ACTOR alone.",
    )
    login: PeopleLogin | None = Field(
        default=None,
        description="The identity provider people prove themselves with: `mlspec login --env E` (device code) "
        "keeps their ID token, and plan and apply act as its verified person.",
    )
    signers: dict[Fingerprint, Principal] = Field(
        default_factory=dict,
        description="OpenPGP key fingerprints (40 upper-case hex) and who each is: a HEAD commit signed by one "
        "proves that person acts.",
    )

    @model_validator(mode="after")
    def _groups_hold_users(self) -> Access:
        for group, members in self.groups.items():
            nested = [m for m in members if m in self.groups]
            if nested:
                raise FieldError(("groups", group), f"groups hold users, not groups ({', '.join(nested)})")
        return self


class WaiverRules(StrictModel):
    """What a Waiver needs to count in this environment (see docs/policies.md)."""

    max_days: int = Field(
        default=90, ge=1, le=3650,
        description="The longest a waiver may still run: one whose expires is further away denies "
        "(waiver.too_long) and waives nothing.",
    )  # fmt: skip
