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
from collections.abc import Iterable
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

    def render(self, sources: dict[str, str]) -> str:
        """The diagnostic as `FILE:LINE:COL: error: MESSAGE [code]`, with the line and a caret."""
        parts = [_render_one(self.severity, f"{self.message} [{self.code}]", self.span, sources)]
        parts += [_render_one("note", n.message, n.span, sources) for n in self.notes]
        return "\n".join(parts)


class CompoundError(Exception):
    """A user's program or data is invalid; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = tuple(diagnostics)
        self.sources = sources or {}
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)


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
    """The diagnostics of one compile, collected as the checker's passes find them."""

    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []

    def error(self, code: str, message: str, span: Span | None, notes: Iterable[Note] = ()) -> None:
        self.diagnostics.append(Diagnostic("error", code, message, span, tuple(notes)))

    def warn(self, code: str, message: str, span: Span | None) -> None:
        self.diagnostics.append(Diagnostic("warning", code, message, span))

    def unknown(
        self, code: str, what: str, name: str, span: Span, candidates: Iterable[str], known: str = ""
    ) -> None:
        """Report an unknown name, suggesting the closest candidate; `known` lists the choices."""
        hint = suggest(name, candidates)
        message = f"unknown {what} '{name}'" + (f"; did you mean '{hint}'?" if hint else "")
        self.error(code, message + (f" ({known})" if known else ""), span)

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    def in_order(self) -> tuple[Diagnostic, ...]:
        """Every diagnostic, by position in the source (those without one first)."""
        return tuple(
            sorted(self.diagnostics, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
        )


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to a misspelt `name`, if one is close enough."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return close[0] if close else None


def _render_one(severity: str, message: str, span: Span | None, sources: dict[str, str]) -> str:
    if span is None:
        return f"{severity}: {message}"
    head = f"{span}: {severity}: {message}"
    text = sources.get(span.file)
    lines = text.splitlines() if text is not None else []
    if not 1 <= span.line <= len(lines):
        return head
    line = lines[span.line - 1]
    start = len(line[: span.column - 1].expandtabs())
    end_col = span.end_column if span.end_line == span.line else len(line) + 1
    width = max(1, len(line[: end_col - 1].expandtabs()) - start)
    number = str(span.line)
    pad = " " * len(number)
    caret = " " * start + "^" + "~" * (width - 1)
    return f"{head}\n    {number} | {line.expandtabs()}\n    {pad} | {caret}"
