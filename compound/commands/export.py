"""`compound export RUN --out DIR`: each trained component as an ordinary Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import TrustRemoteCode, err


def command(
    run: Annotated[Path, typer.Argument(help="A training run folder.")],
    out: Annotated[Path, typer.Option(help="Where to write one Hugging Face folder per trained component.")],
    adapter: Annotated[
        bool, typer.Option(help="Keep LoRA adapters as PEFT adapters instead of merging them.")
    ] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Write each trained component as an ordinary Hugging Face folder (no compound needed to load it)."""
    from compound.export import export

    for path in export(run, out, adapter, trust_remote_code):
        err.print(f"wrote {path}")
