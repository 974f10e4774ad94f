"""The policy ids a policy set can report, read from the Rego sources by the engine's own parser.

Rules add objects ``{"id": ..., ...}`` (or ``lib.finding("id", ...)``) to ``deny`` and ``warn`` of
packages under ``mlspec.policies``; the ids written as string literals there are the policies
``mlspec check`` evaluates. Ids built at run time cannot be read statically; the report adds every
id that findings name, so nothing evaluated goes missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mlspec.load.discovery import display_path

POLICY_PACKAGE = ("mlspec", "policies")


def declared_policy_ids(files: Iterable[Path]) -> tuple[str, ...]:
    """Every policy id written in a ``deny``/``warn`` rule head of the files, sorted."""
    import regorus

    engine = regorus.Engine()
    for path in files:
        engine.add_policy(display_path(path), path.read_text(encoding="utf-8"))
    ids: set[str] = set()
    for module in json.loads(engine.get_ast_as_json()):
        ast = module.get("ast", {})
        if tuple(_ref_path(ast.get("package", {}).get("refr")))[:2] != POLICY_PACKAGE:
            continue
        for rule in ast.get("rules", []):
            head = rule.get("Spec", {}).get("head", {})
            for kind in ("Set", "Compr"):
                body = head.get(kind)
                if body and tuple(_ref_path(body.get("refr"))) in (("deny",), ("warn",)):
                    ids.update(_literal_ids(body.get("key") or body.get("assign", {}).get("value")))
    return tuple(sorted(ids))


def _ref_path(node: Any) -> Iterator[str]:
    """The dotted names of a ``Var`` / ``RefDot`` chain, outermost first."""
    if not isinstance(node, dict):
        return
    if "Var" in node:
        yield str(node["Var"]["value"])
    elif "RefDot" in node:
        yield from _ref_path(node["RefDot"]["refr"])
        yield str(node["RefDot"]["field"][1])


def _literal_ids(node: Any) -> set[str]:
    """Ids in a rule's key: an object literal's ``id`` field, or a call's first string argument."""
    if not isinstance(node, dict):
        return set()
    if "Object" in node:
        for _span, key, value in node["Object"].get("fields", []):
            if key.get("String", {}).get("value") == "id" and "String" in value:
                return {str(value["String"]["value"])}
    if "Call" in node:
        params = node["Call"].get("params") or []
        if params and "String" in params[0]:
            return {str(params[0]["String"]["value"])}
    return set()
