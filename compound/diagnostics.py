"""Errors and warnings about a user's program, and how they are shown.

Every stage reports problems as `Diagnostic`s with a source span and a short
code (`[unknown-name]`); the language reference catalogues each code with a
program that triggers it. They render compiler-style:

    storyboard.cmp:5:15: error: unknown name 'reqest'; did you mean 'request'? [unknown-name]
        5 | plan : text ~ writer(reqest)
          |                      ^~~~~~
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from compound.ir import Span

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Note:
    message: str
    span: Span | None = None


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    span: Span | None = None
    notes: tuple[Note, ...] = field(default=())

    def render(self, sources: Mapping[str, str] | Sources) -> str:
        """The diagnostic as `FILE:LINE:COL: error: MESSAGE [code]`, with the line and a caret."""
        lines = sources if isinstance(sources, Sources) else Sources(sources)
        parts = [_render_one(self.severity, f"{self.message} [{self.code}]", self.span, lines)]
        parts += [_render_one("note", n.message, n.span, lines) for n in self.notes]
        return "\n".join(parts)


class Sources:
    """Source texts split into lines once, as the parser counts them: at newlines only (a form feed or
    U+2028 in a comment is not a line break)."""

    def __init__(self, texts: Mapping[str, str]):
        self.texts = texts
        self._lines: dict[str, list[str]] = {}

    def line(self, file: str, number: int) -> str | None:
        """Line `number` (from 1) of `file`, without its line break; None if there is none."""
        if file not in self._lines:
            text = self.texts.get(file)
            self._lines[file] = [] if text is None else [s.removesuffix("\r") for s in text.split("\n")]
        lines = self._lines[file]
        return lines[number - 1] if 1 <= number <= len(lines) else None


class CompoundError(Exception):
    """A user's program or data is invalid; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = tuple(diagnostics)
        self.sources = sources or {}
        super().__init__(self.render())

    def render(self) -> str:
        sources = Sources(self.sources)
        return "\n".join(d.render(sources) for d in self.diagnostics)


def error(
    code: str,
    message: str,
    span: Span | None = None,
    notes: Iterable[Note] = (),
    sources: dict[str, str] | None = None,
) -> CompoundError:
    """The one way to build an error: `raise error("row", f"{path} row 3: ...", node.span)`."""
    return CompoundError([Diagnostic("error", code, message, span, tuple(notes))], sources)


class Report:
    """The diagnostics of one compile, collected as the checker's passes find them.

    At most `shown` are kept for display (the rest are counted), and only the
    first `suggestions` unknown names get a "did you mean": a file of many
    mistakes costs time in proportion to its size.
    """

    def __init__(self, shown: int = 200, suggestions: int = 50) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.shown, self.suggestions = shown, suggestions
        self.errors = 0

    def error(self, code: str, message: str, span: Span | None, notes: Iterable[Note] = ()) -> None:
        self.errors += 1
        self.diagnostics.append(Diagnostic("error", code, message, span, tuple(notes)))

    def warn(self, code: str, message: str, span: Span | None) -> None:
        self.diagnostics.append(Diagnostic("warning", code, message, span))

    def unknown(
        self, code: str, what: str, name: str, span: Span, candidates: Iterable[str], known: str = ""
    ) -> None:
        """Report an unknown name, suggesting the closest candidate; `known` lists the choices."""
        hint = None
        if self.suggestions > 0:
            self.suggestions -= 1
            hint = suggest(name, candidates)
        message = f"unknown {what} '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
        self.error(code, message + (f" ({known})" if known else ""), span)

    @property
    def failed(self) -> bool:
        return self.errors > 0

    def in_order(self) -> tuple[Diagnostic, ...]:
        """The diagnostics by position in the source (those without one first), the first `shown` of
        them and a count of the rest."""
        found = sorted(self.diagnostics, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
        if len(found) <= self.shown:
            return tuple(found)
        rest = found[self.shown :]
        errors = sum(d.severity == "error" for d in rest)
        summary = f"{len(rest):,} more diagnostics not shown ({errors:,} errors; Limits.errors)"
        return (*found[: self.shown], Diagnostic("error" if errors else "warning", "too-many", summary))


def needs(cause: ImportError) -> str:
    """A missing package's ImportError on one line (diffusers' and transformers' span several: the class,
    the package, how to install it)."""
    return " ".join(str(cause).split()) or type(cause).__name__


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelt `name`, if one is close enough."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return close[0] if close else None


def _render_one(severity: str, message: str, span: Span | None, sources: Sources) -> str:
    if span is None:
        return f"{severity}: {message}"
    head = f"{span}: {severity}: {message}"
    line = sources.line(span.file, span.line)
    if line is None:
        return head
    start = len(line[: span.column - 1].expandtabs())
    end_col = span.end_column if span.end_line == span.line else len(line) + 1
    width = max(1, len(line[: end_col - 1].expandtabs()) - start)
    number = str(span.line)
    pad = " " * len(number)
    caret = " " * start + "^" + "~" * (width - 1)
    return f"{head}\n    {number} | {line.expandtabs()}\n    {pad} | {caret}"
