"""Pass 1: collect the declarations of a program (names, kinds, plate sizes); report duplicates."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from compound.backends.fn import FUNCTIONS
from compound.diagnostics import Note, Report
from compound.limits import DEFAULT, Limits
from compound.parse import (
    ComponentDecl,
    ConstDecl,
    InputDecl,
    Literal,
    Name,
    NodeDecl,
    ParamDecl,
    Program,
)

#: The plate index, usable inside a plate declaration as `x[i]`.
INDEX = "i"
Decl = ComponentDecl | ConstDecl | ParamDecl | InputDecl | NodeDecl


@dataclass
class Scope:
    """Every declaration by name, the plate size of each node (None: not a plate), the names used."""

    decls: dict[str, Decl] = field(default_factory=dict)
    sizes: dict[str, int | None] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    def resolve(self, name: Name, report: Report) -> Decl | None:
        """The declaration `name` refers to, marked used; reports an unknown name."""
        decl = self.decls.get(name.text)
        if decl is None:
            report.unknown(
                "unknown-name", "name", name.text, name.span, itertools.chain(self.decls, FUNCTIONS)
            )
            return None
        self.used.add(name.text)
        return decl


def declare(program: Program, report: Report, limits: Limits = DEFAULT) -> Scope:
    """The program's scope: each name declared once (a second declaration is an error)."""
    scope = Scope()
    for s in program.statements:
        if not isinstance(s, Decl):
            continue
        name = s.name
        if name.text == INDEX:
            report.error("reserved-name", f"'{INDEX}' is reserved for the plate index", name.span)
        if name.text in scope.decls:
            first = scope.decls[name.text]
            report.error(
                "duplicate-name",
                f"'{name.text}' is declared twice",
                name.span,
                [Note("first declared here", first.name.span)],
            )
            continue
        scope.decls[name.text] = s
        if isinstance(s, NodeDecl):
            scope.sizes[name.text] = _plate_size(s.size, report, limits)
        elif isinstance(s, InputDecl):
            scope.sizes[name.text] = None
    return scope


def expanded(name: str, size: int | None) -> tuple[str, ...]:
    """The node names of a declaration: `x`, or `x[0]`..`x[size-1]` for a plate."""
    return (name,) if size is None else tuple(f"{name}[{k}]" for k in range(size))


def noun(decl: Decl) -> str:
    """What a declaration declares, in a word."""
    names = {ComponentDecl: "component", ConstDecl: "const", ParamDecl: "param", InputDecl: "input"}
    return names.get(type(decl), "node")


def describe(decl: Decl) -> str:
    """`a component`, `an input`, ..."""
    word = noun(decl)
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plate_size(size: Literal | None, report: Report, limits: Limits) -> int | None:
    if size is None:
        return None
    if (
        isinstance(size.value, int)
        and not isinstance(size.value, bool)
        and 1 <= size.value <= limits.plate_size
    ):
        return size.value
    if isinstance(size.value, int) and size.value > limits.plate_size:
        report.error(
            "plate-size",
            f"a plate of {size.value:,}: the limit is {limits.plate_size:,} (Limits.plate_size)",
            size.span,
        )
        return None
    report.error("plate-size", f"a plate size is a whole number of at least 1, not {size.value}", size.span)
    return None
