"""`compound view RUN`: one static HTML page of a train or align run, to open from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import err


def command(
    run: Annotated[Path, typer.Argument(help="A `compound train` or `compound align` run folder.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the page (default RUN/view.html).")] = None,
) -> None:
    """Write a run's page: per round its samples, pairs, curves, held-out samples and the credit report."""
    from compound.view import view

    page = view(run, out)
    err.print(f"wrote {page} (open {page.resolve().as_uri()})")
