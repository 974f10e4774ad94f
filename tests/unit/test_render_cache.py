"""The render (and policy result) cache is keyed by mlspec's own source as well as by the inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlspec import hashing
from mlspec.render import cache as cache_module
from mlspec.render.cache import RenderCache


def test_a_change_of_mlspec_code_is_a_new_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = RenderCache(tmp_path)
    store.store("kfp", ["spec-digest"], b"compiled by the old code")
    assert store.lookup("kfp", ["spec-digest"]) == b"compiled by the old code"
    monkeypatch.setattr(cache_module, "source_digest", lambda: "the code changed")
    assert RenderCache(tmp_path).lookup("kfp", ["spec-digest"]) is None


def test_the_source_digest_covers_every_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "mlspec"
    (package / "render").mkdir(parents=True)
    (package / "hashing.py").write_text("x = 1\n")
    (package / "render" / "kfp.py").write_text("y = 1\n")
    monkeypatch.setattr(hashing, "__file__", str(package / "hashing.py"))
    hashing.source_digest.cache_clear()
    try:
        before = hashing.source_digest()
        (package / "render" / "kfp.py").write_text("y = 2\n")
        hashing.source_digest.cache_clear()
        assert hashing.source_digest() != before
    finally:
        hashing.source_digest.cache_clear()


@pytest.mark.parametrize("source", ["render/templates/feast_definitions.py.j2", "policy/library/residency.rego"])
def test_the_source_digest_covers_templates_and_policies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    """A changed template or library policy must not reuse output cached by the old one."""
    package = tmp_path / "mlspec"
    (package / source).parent.mkdir(parents=True)
    (package / "hashing.py").write_text("x = 1\n")
    (package / source).write_text("one\n")
    monkeypatch.setattr(hashing, "__file__", str(package / "hashing.py"))
    hashing.source_digest.cache_clear()
    try:
        before = hashing.source_digest()
        (package / source).write_text("two\n")
        hashing.source_digest.cache_clear()
        assert hashing.source_digest() != before
    finally:
        hashing.source_digest.cache_clear()
