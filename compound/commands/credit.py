"""`compound credit RUN --eval held.jsonl`: which component an alignment's gain comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import ScorerOptions, TrustRemoteCode, err, scorer_options


def command(
    run: Annotated[Path, typer.Argument(help="A `compound train` or `compound align` run folder.")],
    eval_inputs: Annotated[Path, typer.Option("--eval", help="Held-out inputs, JSONL.")],
    scorer: Annotated[
        str | None, typer.Option(help="A scorer's name or file (default: an align run's own).")
    ] = None,
    option: ScorerOptions = None,
    eval_samples: Annotated[int | None, typer.Option(help="Samples per held-out input.")] = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Which component the gain comes from: held-out scores of the base, the trained system, and the
    trained system with each component reverted to its base model."""
    from compound.credit import credit, markdown

    table = credit(run, eval_inputs, scorer, scorer_options(option), eval_samples, trust_remote_code)
    print(markdown(table), end="")
    err.print(f"wrote {run / 'credit' / 'CREDIT.md'}")
