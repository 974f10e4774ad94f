"""The CLI stays bounded whatever the input: a file with too many documents is one error, a flood of
diagnostics is cut with "and N more", and an excerpt is never read from a pipe or past its byte cap."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mlspec.diagnostics import Diagnostic, Location
from mlspec.load.limits import Limits
from mlspec.load.yaml_loader import load_bytes
from mlspec.views.diagnostics_text import EXCERPT_BYTES, MAX_SHOWN, SourceCache, render_diagnostics
from mlspec.views.style import Style


def test_a_file_over_the_document_limit_is_one_error_and_no_documents() -> None:
    text = "".join(f"---\nkind: Nope\nmetadata: {{name: n{i}}}\n" for i in range(120)).encode()
    documents, problems = load_bytes(text, "many.yaml", Limits(max_documents=100))
    assert documents == []
    assert [p.code for p in problems] == ["too-many-documents"]
    assert str(problems[0].location).startswith("many.yaml:")


def test_a_flood_of_diagnostics_is_cut_with_how_many_more() -> None:
    flood = [Diagnostic("invalid-value", f"problem {i}", Location("f.yaml", i + 1, 1)) for i in range(MAX_SHOWN + 57)]
    out = render_diagnostics(flood, Style(False), excerpts=False)
    assert out.count("error[invalid-value]") == MAX_SHOWN
    assert out.endswith("... and 57 more (--format json lists them all)")
    few = render_diagnostics(flood[:3], Style(False), excerpts=False)
    assert "more" not in few


def test_excerpts_never_block_on_a_pipe_nor_read_past_their_cap(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.yaml"
    os.mkfifo(pipe)
    found: list[str | None] = []
    reader = threading.Thread(target=lambda: found.append(SourceCache().line(str(pipe), 1)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading an excerpt blocked on a pipe"
    assert found == [None]
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:  # sparse: 1 GB long, nothing on disk
        handle.write(b"first line\n")
        handle.seek(1 << 30)
        handle.write(b"\nlast line\n")
    cache = SourceCache()
    assert cache.line(str(big), 1) == "first line"
    assert cache.line(str(big), 3) is None, f"read past the {EXCERPT_BYTES}-byte cap"
