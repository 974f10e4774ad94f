"""Render environments into a folder: the files real tools consume, one folder per environment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.errors import UsageError

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.app.validation import Resolution, ValidationResult
    from mlspec.render.engine import RenderResult
    from mlspec.render.write import WriteSummary


def check_targets(targets: Sequence[str]) -> None:
    """Refuse a renderer name that does not exist (UsageError with a did-you-mean)."""
    from mlspec.render.registry import RENDERERS
    from mlspec.spec.suggest import did_you_mean

    for target in targets:
        if target not in RENDERERS:
            guess = did_you_mean(target, RENDERERS)
            raise UsageError(
                f"unknown target '{target}'",
                hint=f"did you mean '{guess}'?" if guess else f"one of: {', '.join(RENDERERS)}",
            )


def render_to(
    project: Project,
    environment: str,
    folder: Path,
    validation: ValidationResult,
    *,
    targets: Sequence[str] = (),
    use_cache: bool = True,
    pin: bool = False,
) -> tuple[Resolution, RenderResult | None, WriteSummary | None]:
    """Render ``environment`` (all targets, or the named ones) and write its files under ``folder``; with ``pin``,
    every InferenceService first gets its exact model version from the registry (the GitOps hand-off,
    :mod:`mlspec.app.pinning`)."""
    from mlspec.render.write import write_tree

    resolution, result = project.render(
        environment, targets or None, project.resolve(environment, validation), use_cache=use_cache
    )
    if pin and result is not None and result.ok and resolution.graph is not None:
        from mlspec.app.pinning import pin_render
        from mlspec.targets.cluster.platform import registry_of

        result = pin_render(result, resolution.graph, registry_of(resolution.graph))
    if result is None or not result.ok:
        return resolution, result, None
    return resolution, result, write_tree(folder, result.artifacts)
