"""Field-level plan diffs: what a reviewer reads under each changed resource."""

from __future__ import annotations

from mlspec.plan.planner import diff_fields


def test_a_new_optional_field_left_unset_is_not_a_change() -> None:
    # state written before a field existed lacks the key; the spec now carries it as null
    before = {"spec": {"mode": "online", "model": {"name": "m"}}}
    after = {"spec": {"mode": "online", "model": {"name": "m"}, "batch": None, "edge": None}}
    assert diff_fields(before, after) == []
    assert diff_fields(after, before) == []


def test_new_removed_and_changed_values_are_changes() -> None:
    before = {"spec": {"mode": "online", "gone": 3, "features": [{"name": "a", "dtype": "int64"}]}}
    after = {"spec": {"mode": "batch", "batch": {"chunk_size": 10}, "features": [{"name": "a", "dtype": "float32"}]}}
    found = sorted((c.path, repr(c.before), repr(c.after)) for c in diff_fields(before, after))
    assert found == [
        ("spec.batch", "None", "{'chunk_size': 10}"),
        ("spec.features[a].dtype", "'int64'", "'float32'"),
        ("spec.gone", "3", "None"),
        ("spec.mode", "'online'", "'batch'"),
    ]
