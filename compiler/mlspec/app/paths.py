"""Where an environment's things live: its state store, its local folder, its output folder, its revision."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlspec.diagnostics import Diagnostic
from mlspec.git.info import Revision
from mlspec.git.info import revision as current_revision
from mlspec.load.discovery import PROJECT_FILE, files_inside, inside, yaml_files
from mlspec.resolve.graph import ResolvedGraph

if TYPE_CHECKING:
    from mlspec.app.project import Project
    from mlspec.state.base import StateStore
    from mlspec.targets.local.paths import LocalPaths


def state_store(project: Project) -> StateStore:
    """The project's state: the backend its project file chooses (SQLite by default, or PostgreSQL)."""
    from mlspec.app.audit_trail import AnchoredStore
    from mlspec.state.store import open_store

    return AnchoredStore(project, open_store(project.settings.state, project.home, project.name))


def project_revision(project: Project, graph: ResolvedGraph) -> Revision:
    """The commit the specs come from; the environment's own folders and the state never count as changes."""
    state = project.home / project.settings.state.path
    journals = tuple(state.with_name(state.name + suffix) for suffix in ("", "-wal", "-shm", "-journal"))
    return current_revision(project.root, (project.home / ".mlspec", data_dir(project, graph), *journals))


def data_dir(project: Project, graph: ResolvedGraph) -> Path:
    """The environment's local folder: applied artifacts and, on a local tier, the engines' stores."""
    return project.home / (graph.env.spec.data_dir or f".mlspec/{graph.name}")


def output_dir(project: Project, graph: ResolvedGraph) -> Path:
    """Where the output target writes an environment's artifacts."""
    return data_dir(project, graph) / "output"


def runs_engines(graph: ResolvedGraph) -> bool:
    """A local-tier environment brings the platform up on this machine; the others hand artifacts to GitOps."""
    return graph.env.spec.tier == "local"


def local_paths(project: Project, graph: ResolvedGraph) -> LocalPaths:
    """The local platform's folders for an environment."""
    from mlspec.targets.local.paths import LocalPaths

    spec = graph.env.spec
    encryption, identity = spec.encryption, spec.identity
    return LocalPaths(
        graph.name,
        project.root,
        data_dir(project, graph),
        encryption.kms_key,
        encryption.signing_key,
        issuer=identity.issuer if identity else None,
        jwks_uri=identity.jwks_uri if identity else None,
    )


def spec_files(project: Project) -> tuple[list[Path], list[Diagnostic]]:
    """Every YAML file of the project's spec and environment folders, and an error for each folder that leads
    outside the project or is missing and each file that links out (those are never read)."""
    files: list[Path] = []
    problems: list[Diagnostic] = []
    specs = project.settings.specs
    for index, folder in enumerate([*specs, project.settings.environments]):
        path = project.root / folder
        key: tuple[str | int, ...] = ("spec", "specs", index) if index < len(specs) else ("spec", "environments")
        if inside(project.root, folder) is None:
            problems.append(
                Diagnostic(
                    "outside-project",
                    f"folder '{folder}' named in {PROJECT_FILE} leads outside the project ({path.resolve()})",
                    project.project_file_location(key),
                    hint="spec folders are inside the project: a relative path without '..' or links out",
                )
            )
        elif not path.exists():
            problems.append(
                Diagnostic(
                    "missing-directory",
                    f"folder '{folder}' named in {PROJECT_FILE} does not exist",
                    project.project_file_location(key),
                    hint=f"create it, or fix the path in {PROJECT_FILE}",
                )
            )
        else:
            kept, links_out = files_inside(project.root, yaml_files(path))
            files.extend(kept)
            problems.extend(links_out)
    return list(dict.fromkeys(files)), problems
