"""Held-out evaluation: a system run on held-out inputs with one fixed set of draws, every sample
scored; its mean score, and its win rate against another system on the very same draws.

`compound align` evaluates every round this way against round 0 (the base system), `compound
credit` every variant against the base: a difference in score is the systems', not the draws'.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compound import samples as saved
from compound.diagnostics import error
from compound.samples.run import sample_inputs
from compound.scorers import Scorer
from compound.seeds import splitmix
from compound.text import Text

#: The seed stream of held-out evaluation: the same draws for every system evaluated.
EVAL_STREAM = 7_777


def evaluate(
    system: str | Path,
    held: Sequence[Mapping[str, Any]],
    folder: Path,
    scorer: Scorer,
    seed: int,
    samples: int = 1,
    batch: int = 8,
    decoding: Mapping[str, Any] | None = None,
    weights: Path | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    trust_remote_code: bool = False,
    quiet: bool = True,
    text: Text | None = None,
) -> dict[str, float]:
    """Each held-out sample's score (by sample id) of `system` (with `weights`), drawn from the
    evaluation stream of `seed`; the samples stay in `folder` and are read back when already there."""
    if not (folder / "samples.jsonl").is_file():
        sample_inputs(
            system,
            held,
            folder,
            n=samples,
            weights=weights,
            seed=splitmix(seed, EVAL_STREAM),
            scorer=scorer,
            batch=batch,
            decoding=decoding,
            quiet=quiet,
            trust_remote_code=trust_remote_code,
            options=options,
            text=text,
        )
    found = saved.read(folder)
    unscored = [s.id for s in found if s.score is None]
    if unscored:
        raise error("config", f"{folder / 'samples.jsonl'}: sample {unscored[0]} has no score")
    return {s.id: float(s.score or 0.0) for s in found}


def mean_score(scores: Mapping[str, float]) -> float:
    """The mean of a system's held-out scores."""
    return statistics.fmean(scores.values())


def win_rate(scores: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """The share of draws (matched by sample id) where `scores` beats `baseline`, ties counting half."""
    shared = [k for k in scores if k in baseline]
    if not shared:
        raise error("config", "no held-out sample of this system matches one of the baseline's")
    won = sum(1.0 if scores[k] > baseline[k] else 0.5 if scores[k] == baseline[k] else 0.0 for k in shared)
    return won / len(shared)
