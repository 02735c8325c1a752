"""`compound compile FILE`: the factorization (or the checked IR as JSON), and a drawing of the DAG."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import compiled, err
from compound.diagnostics import error
from compound.factorize import formula


class Emit(str, Enum):
    factors = "factors"
    ir = "ir"


def command(
    file: Annotated[Path, typer.Argument(help="The .cmp file.")],
    emit: Annotated[
        Emit, typer.Option(help="factors: the factorization; ir: the checked IR as JSON.")
    ] = Emit.factors,
    viz: Annotated[Path | None, typer.Option(help="Draw the DAG to OUT.svg, .png, .pdf or .dot.")] = None,
) -> None:
    """Compile a .cmp file: print its factorization (or IR) and optionally draw it."""
    result = compiled(file)
    if result is None:
        raise typer.Exit(1)
    system = result.system
    if emit is Emit.ir:
        sys.stdout.write(system.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(formula(system) + "\n")
    if viz is not None:
        from compound.viz import GraphvizMissing, render

        try:
            err.print(f"wrote {render(system, viz)}")
        except (GraphvizMissing, ValueError, OSError) as e:
            raise error("config", str(e)) from None
