"""`mlspec init`: a new platform repository that validates cleanly from the start."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from mlspec import __version__
from mlspec.errors import UsageError

TEMPLATE = Path(__file__).parent / "template"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _target_name(relative: Path) -> Path:
    # Template folders and files that start with a dot are stored as dot-NAME so
    # that packaging tools do not skip them.
    return Path(*[("." + part[4:]) if part.startswith("dot-") else part for part in relative.parts])


def project_name(directory: Path, name: str | None) -> str:
    """A valid project name: the given one, or one derived from the folder name."""
    if name is not None:
        if not _NAME_RE.match(name):
            raise UsageError(
                f"invalid project name {name!r}",
                hint="use lowercase letters, digits and '-', starting and ending with a letter or digit",
            )
        return name
    derived = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")[:63] or "ml-platform"
    return derived


def scaffold(directory: Path, *, name: str | None = None, force: bool = False) -> list[Path]:
    """Write the starter project into ``directory``; returns the files written."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a folder")
    if (directory / "mlspec.yaml").exists() and not force:
        raise UsageError(f"{directory} already holds an mlspec project", hint="pass --force to overwrite its files")
    if directory.exists() and any(directory.iterdir()) and not force:
        raise UsageError(f"{directory} is not empty", hint="choose an empty folder, or pass --force")
    values = {"name": project_name(directory, name), "version": __version__}
    written: list[Path] = []
    for source in sorted(TEMPLATE.rglob("*")):
        if not source.is_file():
            continue
        target = directory / _target_name(source.relative_to(TEMPLATE))
        target.parent.mkdir(parents=True, exist_ok=True)
        text = Template(source.read_text(encoding="utf-8")).safe_substitute(values)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    from mlspec.scaffold.sample import data_markdown, describe_sources, project_specs
    from mlspec.spec.schema import write_schemas

    written.extend(write_schemas(directory / "schema"))
    data_doc = directory / "DATA.md"
    data_doc.write_text(data_markdown(describe_sources(project_specs(directory))), encoding="utf-8")
    written.append(data_doc)
    return written
