"""The Target interface every adapter implements (plan issue: output folder; later: Kubernetes, KFP, MLflow, Feast)."""

from __future__ import annotations

from typing import ClassVar, Protocol

from mlspec.plan.model import Change
from mlspec.render.base import Artifact
from mlspec.state.model import ResourceState


class TargetError(Exception):
    """Applying a change failed; the message says why.

    ``path`` is where in the resource's spec the cause is (``("spec", "evaluation", "gates", "auc")``), so the
    failure is reported at that file:line:column; ``hint`` says what to change.
    """

    def __init__(self, message: str, *, path: tuple[str | int, ...] = (), hint: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.hint = hint


class Target(Protocol):
    """What the reconciler needs from a system it applies to.

    ``apply`` must be idempotent (applying what is already there changes nothing),
    so re-running after a crash converges.
    """

    name: ClassVar[str]

    def plan(self, change: Change, previous: ResourceState | None) -> list[str]:
        """What applying ``change`` would do here, in words (nothing is changed)."""
        ...

    def apply(
        self,
        change: Change,
        artifacts: dict[str, Artifact],
        previous: ResourceState | None,
        keep: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """Make the target match ``change``; returns target-side ids (model versions, object uids...).

        ``keep`` names what other resources own now: a delete or update never removes those.
        """
        ...

    def read_live(self, resource: ResourceState) -> dict[str, str | None]:
        """What the target holds now for ``resource``: artifact path -> sha256 (None when missing)."""
        ...

    def healthy(self, resource: ResourceState) -> bool:
        """Whether the applied resource is up and well."""
        ...
