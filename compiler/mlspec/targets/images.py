"""Build the runtime and serving images with the docker CLI, tag them by content, push them, record them.

The content tag is a digest of ``requirements/lock.txt``, the Dockerfiles, the SBOM tool's pins, mlspec's
own source, the base image and the torch variant: an unchanged build finds its tag already present and
builds nothing. The build context holds wheels of the locked distributions the images need (``pip wheel`` through this
machine's pip configuration, which a container does not see) and a wheel of mlspec itself, so the image
build reaches no index. Each image carries a CycloneDX SBOM of its environment (made in the build stage),
copied out beside the record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlspec.atomic import atomic_write
from mlspec.errors import MlspecError
from mlspec.hashing import digest, source_digest
from mlspec.render.images import IMAGE_NAMES, RECORD_FILE, RecordedImage, read_record
from mlspec.targets.image_pins import image_pins

DOCKER_DIR = "docker"
LOCK_FILE = "requirements/lock.txt"
SBOM_REQUIREMENTS = "sbom-requirements.txt"
EXTRA_REQUIREMENTS = "extra-requirements.txt"  # pins of what the lock leaves out (setuptools, marker deps)
SBOM_IN_IMAGE = "/opt/mlspec/sbom.cdx.json"
SBOM_DIR = "images/sbom"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
LOCAL_REGISTRY = "local"  # the record's registry for images built but not pushed
ROLES = ("runtime", "serving")
EXTRAS = {"runtime": "all", "serving": "serve"}  # the extra of mlspec each image installs


class ImageBuildFailed(MlspecError):
    """docker or pip failed while building, pushing or inspecting an image; the message holds its output."""


def mlspec_source_tree() -> Path:
    """The source tree of the running mlspec (Dockerfiles, lock file, pyproject); ImageBuildFailed without one."""
    import mlspec

    tree = Path(mlspec.__file__).resolve().parents[2]
    if not ((tree / "pyproject.toml").is_file() and (tree / DOCKER_DIR).is_dir() and (tree / LOCK_FILE).is_file()):
        raise ImageBuildFailed(
            f"mlspec image build needs mlspec's source tree (docker/, {LOCK_FILE}); this mlspec runs from {tree}",
            hint="run it from a checkout of mlspec (pip install -e <checkout>)",
        )
    return tree


@dataclass(frozen=True)
class BuildRequest:
    """What to build: from mlspec's source tree, for the project at ``root`` (where the record and SBOMs go)."""

    root: Path
    cache_dir: Path
    source: Path = field(default_factory=mlspec_source_tree)
    base_image: str = DEFAULT_BASE_IMAGE
    torch_variant: str = "cpu"
    push: str | None = None
    roles: tuple[str, ...] = ROLES


@dataclass(frozen=True)
class BuiltImage:
    """One image after ``build_images``: its record and whether the build was a cache hit."""

    image: RecordedImage
    cached: bool
    seconds: float


def run_docker(args: Sequence[str], *, quiet: bool = True) -> str:
    """Run ``docker ARGS``; its stdout, or ImageBuildFailed with its output."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageBuildFailed("docker is not installed", hint="install docker (Debian: docker.io)") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-4000:]
        raise ImageBuildFailed(f"docker {' '.join(args[:2])} failed: {output}")
    return done.stdout


def content_tag(request: BuildRequest, role: str) -> str:
    """The image's tag: a digest of everything that goes into it (lock, Dockerfile, source, base, variant)."""
    root = request.source
    parts = [
        (root / LOCK_FILE).read_text(encoding="utf-8"),
        (root / "pyproject.toml").read_text(encoding="utf-8"),
        (root / DOCKER_DIR / f"{role}.Dockerfile").read_text(encoding="utf-8"),
        (root / DOCKER_DIR / SBOM_REQUIREMENTS).read_text(encoding="utf-8"),
        (root / DOCKER_DIR / EXTRA_REQUIREMENTS).read_text(encoding="utf-8"),
        source_digest(),
        request.base_image,
        request.torch_variant if role == "runtime" else "",
    ]
    return digest(*parts)[:20]


def _image_exists(reference: str) -> bool:
    try:
        run_docker(["image", "inspect", "--format", "{{.Id}}", reference])
    except ImageBuildFailed:
        return False
    return True


PIP_RETRY_WAITS = (10.0, 30.0, 60.0)  # seconds before each new try: an index outage has lasted over 15 s


def _index_allowed() -> dict[str, str]:
    """This process's environment, but never ``PIP_NO_INDEX``: a build fetches the lock's wheels from the
    indexes the machine's pip configuration names (an offline setting meant for a pipeline run is not ours)."""
    return {name: value for name, value in os.environ.items() if name != "PIP_NO_INDEX"}


def _pip(args: Sequence[str], waits: Sequence[float] = PIP_RETRY_WAITS) -> None:
    """Run pip; an index that answers nothing for a while ("from versions: none") is asked again, later."""
    for wait in (*waits, None):
        done = subprocess.run(
            [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False, env=_index_allowed()
        )
        if done.returncode == 0:
            return
        if wait is not None:
            time.sleep(wait)
    raise ImageBuildFailed(f"pip {args[0]} failed: {(done.stderr or done.stdout).strip()[-4000:]}")


def role_requirements(source: Path, role: str) -> list[str]:
    """mlspec's own requirements for ``role``'s extra (base dependencies included, nested extras expanded)."""
    import tomllib

    project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    found: list[str] = list(project["dependencies"])
    pending, seen = [EXTRAS[role]], set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for requirement in extras[extra]:
            if requirement.startswith("mlspec["):
                pending.extend(e for e in requirement[7:-1].split(",") if e not in seen)
            elif requirement not in found:
                found.append(requirement)
    return found


def prepare_context(request: BuildRequest) -> Path:
    """The build context: wheels of the lock (cached by the lock's digest), mlspec's wheel, the SBOM tool."""
    root = request.source
    lock = root / LOCK_FILE
    sbom_pins = root / DOCKER_DIR / SBOM_REQUIREMENTS
    extra_pins = root / DOCKER_DIR / EXTRA_REQUIREMENTS
    needed = [requirement for role in ROLES for requirement in role_requirements(root, role)]
    pins = "\n".join(image_pins(lock.read_text(encoding="utf-8"), needed)) + "\n"
    wheels = request.cache_dir / f"wheels-{digest(pins)[:12]}"
    if not (wheels / ".complete").is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        (wheels / ".pins.txt").write_text(pins, encoding="utf-8")
        _pip(["wheel", "--quiet", "--no-deps", "-r", str(wheels / ".pins.txt"), "-w", str(wheels)])
        (wheels / ".complete").touch()
    extras = request.cache_dir / f"extra-wheels-{digest(extra_pins.read_text(encoding='utf-8'))[:12]}"
    if not (extras / ".complete").is_file():
        _pip(["download", "--quiet", "--no-deps", "-r", str(extra_pins), "-d", str(extras)])
        (extras / ".complete").touch()
    sbom_wheels = request.cache_dir / f"sbom-wheels-{digest(sbom_pins.read_text(encoding='utf-8'))[:12]}"
    if not (sbom_wheels / ".complete").is_file():
        _pip(["download", "--quiet", "--no-deps", "-r", str(sbom_pins), "-d", str(sbom_wheels)])
        (sbom_wheels / ".complete").touch()
    context = request.cache_dir / "context"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    marks = shutil.ignore_patterns(".complete", ".pins.txt")
    shutil.copytree(wheels, context / "wheels", copy_function=os.link, ignore=marks)
    shutil.copytree(extras, context / "wheels", copy_function=os.link, ignore=marks, dirs_exist_ok=True)
    shutil.copytree(sbom_wheels, context / "sbom-wheels", copy_function=os.link, ignore=marks)
    shutil.copy(lock, context / "lock.txt")
    shutil.copy(sbom_pins, context / SBOM_REQUIREMENTS)
    shutil.copy(extra_pins, context / EXTRA_REQUIREMENTS)
    for role in ROLES:
        (context / f"requirements-{role}.txt").write_text("\n".join(role_requirements(root, role)) + "\n")
    _pip(["wheel", "--quiet", "--no-deps", "--no-build-isolation", str(root), "-w", str(context / "mlspec")])
    return context


def _build(request: BuildRequest, role: str, local: str, context: Path) -> None:
    dockerfile = request.source / DOCKER_DIR / f"{role}.Dockerfile"
    args = ["build", "--quiet", "-f", str(dockerfile), "--build-arg", f"BASE_IMAGE={request.base_image}"]
    if role == "runtime":
        args += ["--build-arg", f"TORCH_VARIANT={request.torch_variant}"]
    run_docker([*args, "--label", f"org.mlspec.content-tag={local.rpartition(':')[2]}", "-t", local, str(context)])


def _copy_sbom(request: BuildRequest, local: str, name: str) -> str:
    """Copy the SBOM out of the image to images/sbom/<name>.cdx.json; its path relative to the root."""
    container = run_docker(["create", local, "python3"]).strip()  # the command is never run
    target = request.root / SBOM_DIR / f"{name}.cdx.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_docker(["cp", f"{container}:{SBOM_IN_IMAGE}", str(target)])
    finally:
        run_docker(["rm", container])
    return target.relative_to(request.root).as_posix()


def _push(local: str, registry: str, name: str, tag: str) -> str:
    """Push under ``registry/name:tag``; the manifest digest the registry stored."""
    remote = f"{registry}/{name}:{tag}"
    run_docker(["tag", local, remote])
    run_docker(["push", "--quiet", remote])
    for repo_digest in json.loads(run_docker(["image", "inspect", "--format", "{{json .RepoDigests}}", local])):
        if repo_digest.startswith(f"{registry}/{name}@"):
            return str(repo_digest.rpartition("@")[2])
    raise ImageBuildFailed(f"docker push of {remote} reported no digest")


def build_role(request: BuildRequest, role: str, context: Callable[[], Path]) -> BuiltImage:
    """Build (or find) one role's image, push it when asked, copy its SBOM out; its record."""
    started = time.perf_counter()
    name = IMAGE_NAMES[role]
    tag = content_tag(request, role)
    local = f"{name}:{tag}"
    cached = _image_exists(local)
    if not cached:
        _build(request, role, local, context())
    image_id = run_docker(["image", "inspect", "--format", "{{.Id}}", local]).strip()
    size = int(run_docker(["image", "inspect", "--format", "{{.Size}}", local]).strip())
    registry = request.push.rstrip("/") if request.push else LOCAL_REGISTRY
    manifest = _push(local, registry, name, tag) if request.push else image_id
    sbom = _copy_sbom(request, local, name)
    record = RecordedImage(registry, role, name, tag, manifest, image_id, size, sbom)
    return BuiltImage(record, cached, time.perf_counter() - started)


def build_images(request: BuildRequest) -> list[BuiltImage]:
    """Build every requested role's image and merge them into ``images.lock.json``."""
    prepared: list[Path] = []

    def context() -> Path:
        if not prepared:
            prepared.append(prepare_context(request))
        return prepared[0]

    built = [build_role(request, role, context) for role in request.roles]
    write_record(request.root, [b.image for b in built])
    return built


def write_record(root: Path, images: list[RecordedImage]) -> None:
    """Replace the entries of the same registry and role in ``images.lock.json``; keep the others."""
    replaced = {(i.registry, i.role) for i in images}
    kept = [i for i in read_record(root) if (i.registry, i.role) not in replaced]
    entries = sorted([*kept, *images], key=lambda i: (i.registry, i.role))
    document = {"images": [asdict(i) for i in entries]}
    atomic_write(root / RECORD_FILE, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
