"""The `compound` command line (typer + rich).

Errors in a user's files print as `FILE:LINE:COL: error: MESSAGE` with the
source line and a caret, and exit with status 1; never a traceback.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from compound.compiler import Compilation, compile_source, read_source
from compound.diagnostics import CompoundError, Diagnostic
from compound.factorize import formula

app = typer.Typer(
    name="compound",
    help="Compile, check, draw and align compound AI systems declared in .cmp files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Emit(str, Enum):
    factors = "factors"
    ir = "ir"


def _report(diagnostics: tuple[Diagnostic, ...] | list[Diagnostic], sources: dict[str, str]) -> None:
    for d in diagnostics:
        text = Text(d.render(sources))
        text.highlight_regex(r"\berror:", "bold red")
        text.highlight_regex(r"\bwarning:", "bold yellow")
        text.highlight_regex(r"\bnote:", "bold cyan")
        err.print(text)


def _compile(path: Path) -> Compilation | None:
    """Compile one file, printing its diagnostics; None when it has errors."""
    try:
        source = read_source(path)
        result = compile_source(source, str(path))
    except CompoundError as e:
        _report(e.diagnostics, e.sources)
        return None
    _report(result.warnings, {str(path): source})
    return result


@app.command()
def check(files: Annotated[list[Path], typer.Argument(help="The .cmp files to check.")]) -> None:
    """Check .cmp files: syntax, names, types, plates, cycles, outputs. Exit 1 on any error."""
    failed = 0
    for path in files:
        result = _compile(path)
        if result is None:
            failed += 1
            continue
        system = result.system
        err.print(f"{path}: ok ({len(system.nodes)} nodes, {len(system.factors)} factors)")
    if failed:
        err.print(f"[bold red]{failed} of {len(files)} file(s) have errors[/]")
        raise typer.Exit(1)


@app.command("compile")
def compile_(
    file: Annotated[Path, typer.Argument(help="The .cmp file.")],
    emit: Annotated[
        Emit, typer.Option(help="factors: the factorization; ir: the checked IR as JSON.")
    ] = Emit.factors,
    viz: Annotated[Path | None, typer.Option(help="Draw the DAG to OUT.svg, .png, .pdf or .dot.")] = None,
) -> None:
    """Compile a .cmp file: print its factorization (or IR) and optionally draw it."""
    result = _compile(file)
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
        except GraphvizMissing as e:
            err.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(1) from None
        except (ValueError, OSError) as e:
            err.print(f"[bold red]error:[/] {e}")
            raise typer.Exit(1) from None


def main() -> None:
    app()
