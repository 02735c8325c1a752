"""A `.cmp` file with other model folders or other param values: the same system, edited in place.

(Every other component's folder is made absolute, so the new text can be written anywhere.)

`compound align --reference round` makes each round's base (its reference and
starting point) the last round's trained components: it writes the round's
`system.cmp` with their exported folders in place of the original ones;
`compound export` writes the `.cmp` file of an optimized system, its params'
values the optimized ones. The text is edited where the parser found each path
and each param's string, so comments, layout and every other option stay as
the user wrote them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from compound import ir
from compound.compiler import compile_file
from compound.diagnostics import error
from compound.grammar import quote
from compound.parse import ComponentDecl, ParamDecl, parse


def with_folders(
    path: str | Path,
    folders: Mapping[str, str | Path],
    params: Mapping[str, str] | None = None,
    beside: Path | None = None,
) -> str:
    """The text of the `.cmp` file at `path` with the named components' folders replaced (every other
    component's folder made absolute, so that the text works wherever it is written) and the named
    params' values replaced; a folder inside `beside` (where the text goes) is written relative to it,
    so that the two move together."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    program = parse(text, str(path))
    given = {c.name: c.path for c in compile_file(path).components}
    folders = {name: folders.get(name, path.parent / found) for name, found in given.items()} | dict(folders)
    params = dict(params or {})
    starts = [0]
    for line in text.split("\n"):  # as the parser counts lines: at newlines only
        starts.append(starts[-1] + len(line) + 1)

    def where(span: ir.Span) -> tuple[int, int]:
        return starts[span.line - 1] + span.column - 1, starts[span.end_line - 1] + span.end_column - 1

    edits = []
    for statement in program.statements:
        if isinstance(statement, ComponentDecl) and statement.call.args:
            folder = Path(folders[statement.name.text]).resolve()
            if beside is not None and folder.is_relative_to(beside.resolve()):
                folder = folder.relative_to(beside.resolve())
            value = quote(str(folder))
            edits.append((*where(statement.call.args[0].span), value))
        elif isinstance(statement, ParamDecl) and statement.name.text in params:
            edits.append((*where(statement.value.span), quote(params[statement.name.text])))
    declared = {s.name.text for s in program.statements if isinstance(s, ComponentDecl | ParamDecl)}
    unknown = (set(folders) | set(params)) - declared
    if unknown:
        raise error("config", f"{path} has no component or param {', '.join(sorted(unknown))}")
    for start, end, value in sorted(edits, reverse=True):
        text = text[:start] + value + text[end:]
    return text
