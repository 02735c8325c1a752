"""A weighted sum of scorers: one number from several judgments (a reward model and a similarity to
the reference answer, say)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def group_scores(scorer: Any, rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """A scorer's scores of rows that share an input: its own `score_group` (a pairwise judge, a
    batched model) when it has one, else row by row."""
    group = getattr(scorer, "score_group", None)
    if group is not None:
        return [float(v) for v in group(rows)]
    return [float(scorer(row)) for row in rows]


class Weighted:
    """sum over members of weight * score; each member scores the group as it does alone."""

    def __init__(self, members: Sequence[tuple[Any, float]]):
        self.members = list(members)

    def score_group(self, rows: Sequence[Mapping[str, Any]]) -> list[float]:
        total = [0.0] * len(rows)
        for scorer, weight in self.members:
            for k, value in enumerate(group_scores(scorer, rows)):
                total[k] += weight * value
        return total

    def __call__(self, row: Mapping[str, Any]) -> float:
        return self.score_group([row])[0]
