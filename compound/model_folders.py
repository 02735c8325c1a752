"""A `.cmp` file with other model folders: the same system, its components' paths replaced.

(Every other component's folder is made absolute, so the new text can be written anywhere.)

`compound align --reference round` makes each round's base (its reference and
starting point) the last round's trained components: it writes the round's
`system.cmp` with their exported folders in place of the original ones. The
text is edited where the parser found each path, so comments, layout and every
other option stay as the user wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from compound.compiler import compile_file
from compound.diagnostics import error
from compound.grammar import quote
from compound.parse import ComponentDecl, parse


def with_folders(path: str | Path, folders: Mapping[str, str | Path]) -> str:
    """The text of the `.cmp` file at `path` with the named components' folders replaced, and every
    other component's folder made absolute (so that the text works wherever it is written)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    program = parse(text, str(path))
    given = {c.name: c.path for c in compile_file(path).components}
    folders = {name: folders.get(name, path.parent / found) for name, found in given.items()} | dict(folders)
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits = []
    for statement in program.statements:
        if isinstance(statement, ComponentDecl) and statement.call.args:
            span = statement.call.args[0].span
            start = starts[span.line - 1] + span.column - 1
            end = starts[span.end_line - 1] + span.end_column - 1
            edits.append((start, end, quote(str(Path(folders[statement.name.text]).resolve()))))
    unknown = set(folders) - {s.name.text for s in program.statements if isinstance(s, ComponentDecl)}
    if unknown:
        raise error("config", f"{path} has no component {', '.join(sorted(unknown))}")
    for start, end, value in sorted(edits, reverse=True):
        text = text[:start] + value + text[end:]
    return text
