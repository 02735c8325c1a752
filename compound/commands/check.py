"""`compound check FILES`: syntax, names, types, plates, cycles and outputs of .cmp files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import compiled, err


def command(files: Annotated[list[Path], typer.Argument(help="The .cmp files to check.")]) -> None:
    """Check .cmp files: syntax, names, types, plates, cycles, outputs. Exit 1 on any error."""
    failed = 0
    for path in files:
        result = compiled(path)
        if result is None:
            failed += 1
            continue
        system = result.system
        err.print(f"{path}: ok ({len(system.nodes)} nodes, {len(system.factors)} factors)")
    if failed:
        err.print(f"[bold red]{failed} of {len(files)} file(s) have errors[/]")
        raise typer.Exit(1)
