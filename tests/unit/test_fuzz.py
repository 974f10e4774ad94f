"""Property-based tests: whatever YAML arrives, mlspec accepts it or reports clean, located errors; it never crashes."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlspec.load import Limits, load_bytes
from mlspec.spec import RESOURCE_KINDS
from mlspec.spec.validate import validate_document
from tests.conftest import MINIMAL, REPO

DOCUMENTED = set(re.findall(r"^\| `([a-z0-9-]+)` \|", (REPO / "docs" / "errors.md").read_text(), flags=re.M))
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clean_outcome(data: bytes) -> None:
    """Run load + validate; every outcome must be a clean result."""
    documents, diagnostics = load_bytes(data, "fuzz.yaml", Limits())
    for document in documents:
        _, problems = validate_document(document, RESOURCE_KINDS)
        diagnostics.extend(problems)
    # YAML breaks lines at \n, \r, \r\n and (YAML 1.1, as PyYAML reads it) NEL, LS and PS too
    text = data.decode("utf-8", errors="replace")
    lines = len(re.findall("\r\n|[\n\r\x85\u2028\u2029]", text)) + 2
    for d in diagnostics:
        assert d.code in DOCUMENTED, f"undocumented code {d.code}"
        assert d.message
        assert 1 <= d.location.line <= lines, (d, lines)
        assert d.location.column >= 1


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
keys = st.sampled_from(
    ["apiVersion", "kind", "metadata", "spec", "name", "type", "features", "rollout", "steps"]
) | st.text(max_size=10)
trees = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=5), max_leaves=30)


@FUZZ
@given(trees)
def test_any_yaml_tree_is_handled(tree: Any) -> None:
    assert_clean_outcome(yaml.safe_dump(tree, allow_unicode=True).encode())


@st.composite
def spec_like(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*RESOURCE_KINDS, "Deploymnt", "Project"]))
    base = yaml.safe_load(textwrap.dedent(MINIMAL.get(kind, MINIMAL["Entity"])))
    base["kind"] = kind
    # Replace, drop or add fields at random depths of a real spec.
    for _ in range(draw(st.integers(1, 4))):
        node: Any = base
        path = draw(
            st.lists(
                st.sampled_from(["spec", "metadata", "rollout", "model", "features", "architecture", 0]), max_size=3
            )
        )
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and node:
                node = node[0]
        if isinstance(node, dict):
            action = draw(st.sampled_from(["set", "drop"]))
            if action == "drop" and node:
                node.pop(draw(st.sampled_from(sorted(node, key=str))))
            else:
                node[draw(keys)] = draw(trees)
    return base


@FUZZ
@given(spec_like())
def test_mutated_specs_are_handled(spec: dict[str, Any]) -> None:
    assert_clean_outcome(yaml.safe_dump(spec, allow_unicode=True).encode())


@FUZZ
@given(st.sampled_from(list(MINIMAL.values())), st.data())
def test_byte_level_corruption_is_handled(text: str, data: st.DataObject) -> None:
    raw = bytearray(textwrap.dedent(text).encode())
    for _ in range(data.draw(st.integers(1, 5))):
        position = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from(list(b":-[]{}&*!|>'\"#\t\n ,?%@`\x00\xff\xc3")))
        if action == "insert":
            raw.insert(position, byte)
        elif position < len(raw):
            if action == "delete":
                del raw[position]
            else:
                raw[position] = byte
    assert_clean_outcome(bytes(raw))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_handled(data: bytes) -> None:
    assert_clean_outcome(data)
