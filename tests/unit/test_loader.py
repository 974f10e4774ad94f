"""The YAML loader: 1.2 scalars, locations, duplicate keys, limits and hostile input."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from mlspec.load import Limits, load_bytes

LIMITS = Limits()


def load(text: str | bytes, limits: Limits = LIMITS):  # type: ignore[no-untyped-def]
    data = text.encode() if isinstance(text, str) else text
    return load_bytes(data, "f.yaml", limits)


def test_yaml12_core_scalars_only() -> None:
    docs, diags = load(
        "a: yes\nb: on\nc: NO\nd: true\ne: 0x1f\nf: 0o17\ng: .inf\nh: ~\ni: 2027-03-31\nj: 1_000\nk: 1.5e3\n"
    )
    assert diags == []
    assert docs[0].data == {
        "a": "yes", "b": "on", "c": "NO", "d": True, "e": 31, "f": 15, "g": math.inf, "h": None,
        "i": "2027-03-31", "j": "1_000", "k": 1500.0,
    }  # fmt: skip


def test_quoted_scalars_stay_strings() -> None:
    docs, _ = load("a: '1'\nb: \"true\"\nc: 'null'\n")
    assert docs[0].data == {"a": "1", "b": "true", "c": "null"}


def test_duplicate_key_names_both_places() -> None:
    _, diags = load("a: 1\nb: 2\na: 3\n")
    (d,) = diags
    assert (d.code, d.location.line, d.location.column) == ("duplicate-key", 3, 1)
    assert d.related[0].line == 1
    assert "first defined at line 1" in d.message


def test_every_duplicate_key_is_reported() -> None:
    _, diags = load("a: 1\na: 2\nb: {x: 1, x: 2}\n")
    assert [(d.code, d.location.line) for d in diags] == [("duplicate-key", 2), ("duplicate-key", 3)]


def test_merge_keys_merge_with_explicit_keys_winning() -> None:
    docs, diags = load("base: &b {p: 1, q: 2}\nchild:\n  <<: *b\n  q: 3\n")
    assert diags == []
    assert docs[0].data["child"] == {"p": 1, "q": 3}


def test_locate_points_at_values_keys_and_missing_paths() -> None:
    docs, _ = load("top:\n  inner:\n    value: 42\n  items: [a, b]\n")
    doc = docs[0]
    assert (doc.locate(("top", "inner", "value")).line, doc.locate(("top", "inner", "value")).column) == (3, 12)
    assert doc.locate(("top", "inner", "value"), key=True).column == 5
    assert doc.locate(("top", "items", 1)).column == 14
    missing = doc.locate(("top", "inner", "absent"))
    assert (missing.line, missing.column) == (3, 5)  # the deepest existing node


def test_locate_follows_merge_keys() -> None:
    docs, _ = load("base: &b\n  p: 1\nchild:\n  <<: *b\n")
    assert docs[0].locate(("child", "p")).line == 2


def test_multi_document_files_keep_document_indexes() -> None:
    docs, diags = load("a: 1\n---\nb: 2\n---\n")
    assert diags == []
    assert [(d.index, d.data) for d in docs] == [(0, {"a": 1}), (1, {"b": 2})]
    assert docs[1].location.line == 3


def test_billion_laughs_is_refused_without_expanding() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    docs, diags = load("\n".join(lines) + "\n")
    assert docs == []
    assert [d.code for d in diags] == ["alias-limit"]


def test_modest_alias_use_is_allowed() -> None:
    docs, diags = load("x: &x {a: 1}\ny: *x\nz: *x\n")
    assert diags == []
    assert docs[0].data["z"] == {"a": 1}


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 100_000 + "]" * 100_000,  # flow nesting that crashes libyaml's recursive composer
        "- " * 100_000 + "x",  # compact block sequences
        "a: " + "{b: " * 5000 + "1" + "}" * 5000,
    ],
)
def test_deep_nesting_is_refused_before_it_can_crash(text: str) -> None:
    docs, diags = load(text)
    assert docs == []
    assert [d.code for d in diags] == ["nesting-too-deep"]


def test_nesting_limit_is_configurable() -> None:
    text = "a:\n  b:\n    c:\n      d: 1\n"
    assert load(text)[1] == []
    assert [d.code for d in load(text, Limits(max_depth=2))[1]] == ["nesting-too-deep"]


def test_size_limit() -> None:
    _, diags = load("a: " + "x" * 2000 + "\n", Limits(max_file_bytes=1024))
    assert [d.code for d in diags] == ["file-too-large"]


def test_non_utf8_points_at_the_bad_byte() -> None:
    _, diags = load("a: 1\nb: caf\xe9\n".encode("latin-1"))
    (d,) = diags
    assert (d.code, d.location.line, d.location.column) == ("not-utf8", 2, 7)


def test_utf8_bom_is_accepted() -> None:
    docs, diags = load("\ufeffa: 1\n".encode())
    assert diags == [] and docs[0].data == {"a": 1}


def test_binary_is_refused() -> None:
    _, diags = load(bytes(range(256)))
    assert [d.code for d in diags] == ["binary-file"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "\n\n"])
def test_empty_files(text: str) -> None:
    docs, diags = load(text)
    assert docs == [] and [d.code for d in diags] == ["empty-file"]


@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system", "!Ref", "!!binary", "!!set", "!!timestamp"])
def test_tags_are_refused(tag: str) -> None:
    _, diags = load(f"a: {tag} x\n")
    assert [d.code for d in diags] == ["unsupported-tag"]
    assert diags[0].location.column == 4


def test_syntax_error_has_location_and_hint_for_tabs() -> None:
    _, diags = load("a:\n\tb: 1\n")
    (d,) = diags
    assert (d.code, d.location.line) == ("yaml-syntax", 2)
    assert "tabs" in d.hint


def test_control_characters_are_a_syntax_error_with_position() -> None:
    _, diags = load("a: b\nc: \x07\n")
    (d,) = diags
    assert (d.code, d.location.line, d.location.column) == ("yaml-syntax", 2, 4)


def test_complex_keys_are_refused() -> None:
    _, diags = load("? [a, b]\n: 1\n")
    assert [d.code for d in diags] == ["invalid-key"]


def test_a_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    from mlspec.load import load_file

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    docs, diags = load_file(fifo, "pipe.yaml", LIMITS)
    assert docs == [] and [d.code for d in diags] == ["unreadable-file"]


def test_merge_keys_follow_the_yaml_spec_earlier_sources_win() -> None:
    docs, diags = load("x: &x {k: 1, j: 1}\ny: &y {k: 2}\nc: {<<: [*x, *y]}\n")
    assert diags == [] and docs[0].data["c"] == {"k": 1, "j": 1}
    assert docs[0].locate(("c", "k")).line == 1


def test_keys_stay_as_written() -> None:
    docs, _ = load("labels: {true: a, 0x10: b, on: c}\n")
    assert docs[0].data["labels"] == {"true": "a", "0x10": "b", "on": "c"}
    assert docs[0].locate(("labels", "0x10"), key=True).column == 19


def test_huge_numbers_are_refused_not_crashed_on() -> None:
    _, diags = load("a: " + "1" * 5000 + "\nb: 0x" + "f" * 5000 + "\n")
    assert [d.code for d in diags] == ["number-too-large", "number-too-large"]


def test_aliases_cannot_hide_nesting_depth() -> None:
    lines = ["a0: &a0 1"]
    for i in range(1, 6):
        lines.append(f"a{i}: &a{i} " + "{k: " * 20 + f"*a{i - 1}" + "}" * 20)
    docs, diags = load("\n".join(lines) + "\n")
    assert docs == [] and [d.code for d in diags] == ["nesting-too-deep"]


def test_reader_errors_count_characters_not_bytes() -> None:
    _, diags = load("a: مرحبا بالعالم\nb: x\x07\n")
    (d,) = diags
    assert (d.location.line, d.location.column) == (2, 5)
