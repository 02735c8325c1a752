"""`compound pairs DIR --out prefs.jsonl`: a sample folder's scored samples paired into preference rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from compound.choices import PairingStrategy, values
from compound.commands.common import ScorerOptions, err, scorer_options


def command(
    folder: Annotated[Path, typer.Argument(help="A folder written by `compound sample`.")],
    out: Annotated[Path, typer.Option(help="The preference JSONL to write.")],
    scorer: Annotated[
        str | None, typer.Option(help="Score the samples (else their stored scores are used).")
    ] = None,
    option: ScorerOptions = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="best-worst: one pair per input; all: every better-worse pair; ranked: one ranked list."
        ),
    ] = "best-worst",
    ranked: Annotated[bool, typer.Option(help="Same as --strategy ranked.")] = False,
    min_gap: Annotated[float, typer.Option(help="Smallest score gap that makes a pair.")] = 0.0,
    min_chosen: Annotated[
        float | None, typer.Option(help="Smallest score of a pair's preferred sample (default: any).")
    ] = None,
) -> None:
    """Pair the scored samples of each input into preference rows for `compound train`."""
    import statistics

    from compound import samples as saved
    from compound.diagnostics import error
    from compound.io import write_jsonl
    from compound.samples.pairing import pairs
    from compound.scorers import scorer as find_scorer

    found = saved.read(folder)
    if scorer:
        saved.score(found, find_scorer(scorer, **scorer_options(option)))
    elif any(s.score is None for s in found):
        raise error("config", "the samples have no scores: give --scorer")
    chosen = "ranked" if ranked else strategy
    if chosen not in values(PairingStrategy):
        raise error("config", f"--strategy {chosen!r}: use {', '.join(values(PairingStrategy))}")
    made = pairs(
        found, cast(PairingStrategy, chosen), min_gap, relative_to=out.resolve().parent, min_chosen=min_chosen
    )
    write_jsonl(out, made.pairs)
    gaps = made.gaps or [0.0]
    what = "ranked lists" if chosen == "ranked" else "pairs"
    err.print(
        f"{len(made.pairs)} {what} from {len(found)} samples of {made.inputs} inputs "
        f"({made.without_pair} inputs without one: equal scores, gap < {min_gap}"
        + ("" if min_chosen is None else f" or best < {min_chosen}")
        + "); score gap mean "
        f"{statistics.fmean(gaps):.3f}, min {min(gaps):.3f}, max {max(gaps):.3f}; wrote {out}"
    )
