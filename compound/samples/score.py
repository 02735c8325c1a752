"""Scores of sampled rows: each sample scored (an input's samples together for a scorer of groups),
and best-of-N."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from compound.diagnostics import CompoundError, error
from compound.samples.store import Sample, by_input
from compound.scorers import Scorer, group_scores


def score(samples: Iterable[Sample], scorer: Scorer) -> None:
    """Score every sample, the samples of one input together when the scorer scores groups (a pairwise
    judge, a batched model); a scorer that fails or gives no finite number names the sample. A column
    of the inputs that has a node's name would hide one of the two from the scorer: an error."""
    samples = list(samples)
    for s in samples:
        if shared := sorted(set(s.input) & set(s.values)):
            raise error(
                "config",
                f"sample {s.id}: its inputs have a column '{shared[0]}', and it has a node of that name; a "
                "scorer would see only one of them: rename the column",
            )
    if getattr(scorer, "score_group", None) is None:
        for s in samples:
            try:
                value = float(scorer(s.row))
            except Exception as e:  # a scorer is the user's code: whatever it raises, say which sample
                raise error("config", f"the scorer failed on sample {s.id}: {_why(e)}") from None
            _set(s, value)
        return
    for group in by_input(samples).values():
        try:
            values = group_scores(scorer, [s.row for s in group])
        except Exception as e:
            ids = ", ".join(s.id for s in group)
            raise error("config", f"the scorer failed on samples {ids}: {_why(e)}") from None
        for s, value in zip(group, values, strict=True):
            _set(s, value)


def _why(e: Exception) -> str:
    """What a scorer raised, in one line (a KeyError's message without the quotes its str adds)."""
    if isinstance(e, CompoundError):
        return e.diagnostics[0].message
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {text}"


def _set(sample: Sample, value: float) -> None:
    if not math.isfinite(value):
        raise error("config", f"the scorer gave sample {sample.id} the score {value}, not a finite number")
    sample.score = value


def best_of(samples: Sequence[Sample]) -> list[Sample]:
    """The highest-scoring sample of each input (the first one on ties)."""
    return [max(group, key=lambda s: s.score or 0.0) for group in by_input(samples).values()]
