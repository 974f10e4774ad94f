"""Turn attribute docstrings under spec model fields into ``Field(description=...)``.

Spec models carry their descriptions as ``Field(description=...)`` (attribute docstrings would make pydantic
parse every model's source at import). Run on a spec module written with docstrings, then ``ruff format`` it:

    python scripts/field_descriptions.py compiler/mlspec/spec/deployment.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

WIDTH = 76


def _literal(text: str) -> str:
    return repr(text) if '"' in text else '"' + text.replace("\\", "\\\\") + '"'


def _description(doc: str, indent: str) -> str:
    """The description as one string literal, or implicitly joined literals in parentheses when long."""
    doc = " ".join(doc.split())
    if len(doc) <= WIDTH:
        return _literal(doc)
    parts: list[str] = []
    line = ""
    for word in doc.split(" "):
        if line and len(line) + 1 + len(word) > WIDTH:
            parts.append(line + " ")
            line = word
        else:
            line = f"{line} {word}" if line else word
    parts.append(line)
    body = "\n".join(f"{indent}    {_literal(part)}" for part in parts)
    return f"(\n{body}\n{indent})"


def _field(source: str, statement: ast.AnnAssign, doc: str) -> str:
    """The field's statement rewritten with its docstring as the description."""
    indent = " " * statement.col_offset
    annotation = ast.get_source_segment(source, statement.annotation)
    description = _description(doc, indent + "    ")
    value = statement.value
    if value is None:
        call = f"Field(description={description})"
    elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Field":
        arguments = (ast.get_source_segment(source, value) or "Field()")[len("Field(") : -1].rstrip().rstrip(",")
        call = f"Field({arguments + ', ' if arguments.strip() else ''}description={description})"
    else:
        call = f"Field(default={ast.get_source_segment(source, value)}, description={description})"
    assert isinstance(statement.target, ast.Name)
    return f"{indent}{statement.target.id}: {annotation} = {call}\n"


def convert(path: Path) -> int:
    """Rewrite ``path`` in place; returns how many fields were converted."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement, following in zip(node.body, node.body[1:], strict=False):
            documented = (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
            if documented:
                assert isinstance(statement, ast.AnnAssign) and isinstance(following, ast.Expr)
                doc = str(following.value.value)  # type: ignore[attr-defined]
                edits.append(
                    (statement.lineno, following.end_lineno or following.lineno, _field(source, statement, doc))
                )
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1 : end] = [text]
    path.write_text("".join(lines), encoding="utf-8")
    return len(edits)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {convert(Path(name))} field(s)")
