"""Build the project's container images (``mlspec image build``): the use case behind the command."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.targets.images import BuiltImage


def build_project_images(
    project: Project,
    *,
    push: str | None = None,
    base_image: str | None = None,
    torch_variant: str = "cpu",
    roles: tuple[str, ...] | None = None,
) -> list[BuiltImage]:
    """Build (or find, by content tag) the runtime and serving images, push them when asked, record them.

    The record (``images.lock.json`` at the project root) is what renders read to name images by digest;
    SBOMs go to ``images/sbom/``. Raises ImageBuildFailed when docker or pip fails.
    """
    from mlspec.targets.images import DEFAULT_BASE_IMAGE, ROLES, BuildRequest, build_images

    request = BuildRequest(
        root=project.root,
        cache_dir=project.cache_dir / "images",
        base_image=base_image or DEFAULT_BASE_IMAGE,
        torch_variant=torch_variant,
        push=push,
        roles=roles or ROLES,
    )
    return build_images(request)
