"""Benchmark: the runtime and serving images: size, cold build time, cached rebuild time. Prints one table.

Targets (issue 16): serving image under 400 MB, cached rebuild under 10 s.

--cold means no image layer of this content exists (both images are removed first, with Docker's build cache);
the wheels of the lock file stay cached (fetching them depends on the network, not on the build). Both builds
push to a registry on loopback. Needs root or a running engine: the engine, the Debian base image and the
registry come from scripts/docker_service.py, as in the tests.

The first build is cold with --cold; without it, it reuses whatever Docker holds (after a change of mlspec's
source that is the dependency layers: only mlspec's own layer is rebuilt and pushed).

Usage: python bench/images.py [--cold]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from mlspec.targets.images import BuildRequest, BuiltImage, build_images, content_tag

REPO = Path(__file__).resolve().parent.parent

TARGETS = {"serving": 400e6}
CACHED_TARGET_S = 10.0


def _build(root: Path, base: str, registry: str) -> dict[str, BuiltImage]:
    request = BuildRequest(root=root, cache_dir=REPO / ".cache" / "images", base_image=base, push=registry)
    return {item.image.role: item for item in build_images(request)}


def _forget(root: Path, base: str) -> None:
    """Remove both images of this content and Docker's build cache, so the next build starts cold."""
    request = BuildRequest(root=root, cache_dir=REPO / ".cache" / "images", base_image=base)
    for role, name in (("runtime", "mlspec-runtime"), ("serving", "mlspec-serving")):
        tag = content_tag(request, role)
        ids = subprocess.run(["docker", "images", "-q", f"*{name}*"], capture_output=True, text=True, check=False)
        found = subprocess.run(["docker", "images", "-q", f"{name}:{tag}"], capture_output=True, text=True, check=False)
        for image in {*ids.stdout.split(), *found.stdout.split()}:
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True, check=False)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=False)


def main() -> None:
    """Build (cold with --cold), build again from the cache, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="remove the images and Docker's build cache first")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    from docker_service import docker_engine  # a sibling script, not a package

    with tempfile.TemporaryDirectory(prefix="mlspec-bench-images-") as folder, docker_engine() as found:
        service = json.loads(found)
        root = Path(folder)
        (root / "mlspec.yaml").write_text("name: bench\n")
        if args.cold:
            _forget(root, service["base_image"])
        first = _build(root, service["base_image"], service["registry"])
        cached = _build(root, service["base_image"], service["registry"])
    print(f"\nimages on {service['base_image']} (pushed to a loopback registry)\n")
    kind = "cold build s" if args.cold else "first build s"
    print(f"{'image':<16} {'size MB':>8} {'target':>8} {kind:>13} {'cached s':>9} {'cache hit':>10}")
    print("-" * 68)
    for role in ("runtime", "serving"):
        item = cached[role]
        target = f"<{TARGETS[role] / 1e6:.0f}" if role in TARGETS else "-"
        cold_s = f"{first[role].seconds:.1f}" + ("" if not first[role].cached else " (hit)")
        print(f"{item.image.name:<16} {item.image.size / 1e6:>8.0f} {target:>8} {cold_s:>13} "
              f"{item.seconds:>9.2f} {item.cached!s:>10}")  # fmt: skip
    total = sum(item.seconds for item in cached.values())
    serving_ok = cached["serving"].image.size < TARGETS["serving"]
    print(f"\nserving under 400 MB: {serving_ok}; cached rebuild of both {total:.2f} s (< {CACHED_TARGET_S:.0f} s: "
          f"{total < CACHED_TARGET_S})")  # fmt: skip


if __name__ == "__main__":
    main()
