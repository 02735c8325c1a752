"""The front end, written out once: text -> parse -> declare -> lower -> graph -> factorize -> `ir.System`."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from compound import ir
from compound.check.declare import declare
from compound.check.graph import order, unused_declarations
from compound.check.lower import lower
from compound.diagnostics import CompoundError, Diagnostic, Report, error
from compound.factorize import factorize
from compound.parse import Program, parse


class CompoundWarning(UserWarning):
    """A warning about a program (an unused node, a template that skips an argument)."""


@dataclass(frozen=True)
class Compilation:
    system: ir.System
    warnings: tuple[Diagnostic, ...]
    source: str


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration of a compile.

    Compiling allocates many small objects that form no cycles (plain reference
    counting frees them), yet each full collection would walk the whole heap:
    on a 10,000-node program that made compile time grow about 17x for 10x the
    nodes; paused, it grows linearly (bench/compile_scale.py).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check(program: Program) -> tuple[ir.System, tuple[Diagnostic, ...]]:
    """The checker's passes over a parsed program: a checked `ir.System` (nodes in topological
    order, no factors yet) and its warnings; `CompoundError` with every error (and warning) found."""
    report = Report()
    scope = declare(program, report)
    lowered = lower(program, scope, report)
    nodes = lowered.nodes
    if not report.failed:
        nodes = order(lowered.nodes, lowered.outputs, report)
    if not report.failed:
        unused_declarations(scope, report)
    found = report.in_order()
    if report.failed:
        raise CompoundError(found, {program.file: program.text})
    system = ir.System(
        name=program.name.text,
        file=program.file,
        consts=lowered.consts,
        components=lowered.components,
        plates=lowered.plates,
        nodes=nodes,
        outputs=lowered.outputs,
    )
    return system, found


def compile_source(text: str, file: str = "<string>") -> Compilation:
    """Compile `.cmp` text; raise `CompoundError` with every error found."""
    with paused_gc():
        system, found = check(parse(text, file))
        return Compilation(factorize(system), found, text)


def read_source(path: str | Path) -> str:
    """A `.cmp` file's text; unreadable files become a `CompoundError`, not a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else (e.strerror or str(e))
        raise error("unreadable", f"cannot read {path}: {reason}") from None


def compile_file(path: str | Path) -> ir.System:
    """Compile a `.cmp` file; warnings are issued as `CompoundWarning`s."""
    result = compile_source(read_source(path), str(path))
    for found in result.warnings:
        warnings.warn(found.render({str(path): result.source}), CompoundWarning, stacklevel=2)
    return result.system
