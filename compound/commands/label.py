"""`compound label SAMPLES --out prefs.jsonl`: a local page to label a system's outputs by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    samples: Annotated[Path, typer.Argument(help="A folder written by `compound sample`.")],
    out: Annotated[Path, typer.Option(help="The preference JSONL to write (and its .labels.jsonl log).")],
    mode: Annotated[
        str, typer.Option(help="pairs: left or right; ranked: best first; thumbs: each output good or bad.")
    ] = "pairs",
    seed: Annotated[int, typer.Option(help="Which side each output of a pair shows on.")] = 0,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
) -> None:
    """Serve a page on 127.0.0.1 that shows the samples and records each choice at once (Ctrl-C stops; a
    restart goes on where it stopped)."""
    from compound.label import label

    label(samples, out, mode, seed, port)
