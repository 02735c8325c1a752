"""Preference rows from scored samples: each input's samples paired, better against worse, or ranked.

Per input, best against worst (`best-worst`), every better-worse pair (`all`),
or all of them ranked best first (`ranked`: one `{"input", "ranked": [...]}`
row per input, for the Plackett-Luce loss; of samples whose scores lie within
`min_gap` of the one ranked above them only that one is kept, since a ranking
has no ties). Pairs keep a score gap of at least `min_gap`, and the preferred
sample must score at least `min_chosen`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compound.choices import PairingStrategy, values
from compound.diagnostics import error
from compound.samples.store import Sample, by_input

STRATEGIES = values(PairingStrategy)


@dataclass
class Pairing:
    pairs: list[dict[str, Any]]
    gaps: list[float]
    inputs: int
    without_pair: int


def pairs(
    samples: Sequence[Sample],
    strategy: PairingStrategy = "best-worst",
    min_gap: float = 0.0,
    relative_to: Path | None = None,
    min_chosen: float | None = None,
) -> Pairing:
    """Preference rows from scored samples: per input, best against worst (`best-worst`), every
    pair with a higher and a lower score (`all`), or one ranked list (`ranked`); only pairs whose score
    gap is at least `min_gap` (and above 0) and, when given, whose preferred sample scores at least
    `min_chosen` (a pair whose better side is still a failure teaches only what to avoid). Image
    paths are written relative to `relative_to` when given."""
    if strategy not in STRATEGIES:
        raise error("config", f"strategy {strategy!r}: use {', '.join(STRATEGIES)}")
    out, gaps, without = [], [], 0
    groups = by_input(samples)
    for group in groups.values():
        ranked = sorted(group, key=lambda s: -(s.score or 0.0))
        if strategy == "ranked":
            kept_list = _distinct(ranked, min_gap)
            if len(kept_list) < 2 or (min_chosen is not None and (kept_list[0].score or 0.0) < min_chosen):
                without += 1
                continue
            gaps.append((kept_list[0].score or 0.0) - (kept_list[-1].score or 0.0))
            out.append(
                {"input": kept_list[0].input, "ranked": [_relative(s.values, relative_to) for s in kept_list]}
            )
            continue
        candidates = (
            [(ranked[0], ranked[-1])]
            if strategy == "best-worst"
            else [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
        )
        kept = [
            (a, b)
            for a, b in candidates
            if (a.score or 0.0) - (b.score or 0.0) >= max(min_gap, 1e-12)
            and (min_chosen is None or (a.score or 0.0) >= min_chosen)
        ]
        without += not kept
        for a, b in kept:
            gaps.append((a.score or 0.0) - (b.score or 0.0))
            out.append(
                {
                    "input": a.input,
                    "chosen": _relative(a.values, relative_to),
                    "rejected": _relative(b.values, relative_to),
                }
            )
    return Pairing(out, gaps, len(groups), without)


def _distinct(ranked: Sequence[Sample], min_gap: float) -> list[Sample]:
    """Samples sorted best first, less each one within `min_gap` (and ties) of the one kept above it."""
    kept = [ranked[0]] if ranked else []
    for sample in ranked[1:]:
        if (kept[-1].score or 0.0) - (sample.score or 0.0) >= max(min_gap, 1e-12):
            kept.append(sample)
    return kept


def _relative(values: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    def fix(value: Any) -> Any:
        if isinstance(value, list):
            return [fix(v) for v in value]
        if (
            base is not None
            and isinstance(value, str)
            and value.endswith(".png")
            and Path(value).is_absolute()
        ):
            return os.path.relpath(value, base)
        return value

    return {k: fix(v) for k, v in values.items()}
