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
from compound.io import decode
from compound.limits import DEFAULT, Limits
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


def check(program: Program, limits: Limits = DEFAULT) -> tuple[ir.System, tuple[Diagnostic, ...]]:
    """The checker's passes over a parsed program: a checked `ir.System` (nodes in topological
    order, no factors yet) and its warnings; `CompoundError` with every error (and warning) found."""
    report = Report(limits.errors, limits.suggestions)
    scope = declare(program, report, limits)
    lowered = lower(program, scope, report, limits)
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
        params=lowered.params,
        components=lowered.components,
        plates=lowered.plates,
        nodes=nodes,
        outputs=lowered.outputs,
    )
    return system, found


def compile_source(text: str, file: str = "<string>", limits: Limits = DEFAULT) -> Compilation:
    """Compile `.cmp` text; raise `CompoundError` with every error found."""
    with paused_gc():
        system, found = check(parse(text, file, limits), limits)
        return Compilation(factorize(system), found, text)


def read_source(path: str | Path, limits: Limits = DEFAULT) -> str:
    """A `.cmp` file's text; unreadable files become a `CompoundError`, not a traceback."""
    path = Path(path)
    try:
        if not path.is_file():
            raise error("unreadable", f"cannot read {path}: not a file")
        size = path.stat().st_size
        if size > limits.source_bytes:
            raise error(
                "unreadable",
                f"{path} is {size:,} bytes; the limit is {limits.source_bytes:,} (Limits.source_bytes)",
            )
        return decode(path.read_bytes(), str(path))
    except OSError as e:
        raise error("unreadable", f"cannot read {path}: {e.strerror or e}") from None


def compile_file(path: str | Path, limits: Limits = DEFAULT) -> ir.System:
    """Compile a `.cmp` file; warnings are issued as `CompoundWarning`s."""
    result = compile_source(read_source(path, limits), str(path), limits)
    for found in result.warnings:
        warnings.warn(found.render({str(path): result.source}), CompoundWarning, stacklevel=2)
    return result.system
