"""Deterministic serialisation: the same data always gives the same bytes."""

from __future__ import annotations

import json
from typing import Any

import yaml


class _Dumper(yaml.CSafeDumper):
    """libyaml's emitter (fast); block style, no aliases, long lines kept whole."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.CSafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(data: Any) -> bytes:
    """One YAML document; mapping order is the order the renderer built (stable by construction)."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True
    ).encode()


def to_yaml_documents(documents: list[Any]) -> bytes:
    """Several YAML documents separated by ``---``."""
    return b"---\n".join(to_yaml(doc) for doc in documents)


def to_json(data: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
