"""`compound report RUN`: a training run's curves and REPORT.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import err


def command(run: Annotated[Path, typer.Argument(help="A training run folder.")]) -> None:
    """Plot a run's loss, accuracy and per-node margins, and write REPORT.md."""
    from compound.report import report

    err.print(f"wrote {report(run)}")
