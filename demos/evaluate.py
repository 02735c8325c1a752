"""Scoring the progression system's samples: the paper's two metrics, and where errors come from."""

from __future__ import annotations

import functools
import itertools
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from compound_demos import progression as task

from compound.scorers import MEASURES, Progression

SCORERS = {a.name: Progression(field="image", measure=a.measure) for a in task.ATTRIBUTES}


def score(row: Mapping[str, Any], request: task.Request) -> tuple[float, bool]:
    """(preference score q, order consistency) of one sampled row for its request."""
    scorer = SCORERS[request.attribute]
    row = {**row, "direction": request.direction}
    return scorer(row), scorer.ordered(row)


def plan_quality(plan: str, request: task.Request) -> dict[str, float]:
    """Whether a plan is well formed, names the requested attribute, is ordered, and uses canonical words."""
    parsed = [task.parse(line) for line in plan.split("\n")]
    lines = [p for p in parsed if p is not None]
    if len(parsed) != 3 or len(lines) != 3:
        return {"valid": 0.0, "right_attribute": 0.0, "ordered": 0.0, "canonical": 0.0}
    attribute_ok = all(p[0].name == request.attribute for p in lines)
    levels = [p[1] for p in lines]
    steps = [request.direction * (b - a) for a, b in itertools.pairwise(levels)]
    return {
        "valid": 1.0,
        "right_attribute": float(attribute_ok),
        "ordered": float(all(s > 0 for s in steps)),
        "canonical": sum(not p[2] for p in lines) / 3,
    }


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def summarize(rows: Sequence[Mapping[str, Any]], requests: Sequence[task.Request]) -> dict[str, float]:
    """Mean q, order consistency (also apart for the intents the pairs ask for and the one they never do:
    nan where there are none), and the plans' quality over rows sampled for `requests` (in order)."""
    scored = [score(row, request) for row, request in zip(rows, requests, strict=True)]
    plans = [plan_quality(row["plan"], request) for row, request in zip(rows, requests, strict=True)]
    orders = [
        (float(o), (r.attribute, r.direction) == task.HELD_OUT_INTENT)
        for (_, o), r in zip(scored, requests, strict=True)
    ]
    out = {
        "q": statistics.fmean(q for q, _ in scored),
        "order": statistics.fmean(o for o, _ in orders),
        "order_seen": _mean([o for o, unseen in orders if not unseen]),
        "order_unseen": _mean([o for o, unseen in orders if unseen]),
    }
    out |= {f"plan_{k}": statistics.fmean(p[k] for p in plans) for k in plans[0]}
    return out


def level_of(attribute: task.Attribute, image: Any) -> int:
    """The level (0-4) whose clean rendering measures nearest to the image: how the painter read a caption."""
    measured, levels = MEASURES[attribute.measure](image), _calibration(attribute.name)
    return min(range(5), key=lambda level: abs(measured - levels[level]))


@functools.cache
def _calibration(name: str) -> tuple[float, ...]:
    """Each level's mean measurement over 20 renderings of the task's own renderer."""
    attribute, rng = task.BY_NAME[name], np.random.default_rng(0)
    measure = MEASURES[attribute.measure]
    return tuple(
        statistics.fmean(measure(task.render(attribute, lv, rng)) for _ in range(20)) for lv in range(5)
    )


def fidelity(painter: Any, draws: int = 24, seed: int = 7, steps: int = 20) -> dict[str, float]:
    """Share of a painter's images measured at their caption's level: over all 30 captions, and apart
    for the canonical words but the middle level, the middle level, and the synonyms. `painter` is a
    `diffusion` backend (`compound.load(...).backend("painter")`)."""
    import torch

    captions = [c for c in task.captions() for _ in range(draws)]
    images = painter.sample(captions, torch.Generator().manual_seed(seed), steps=steps)
    hits: dict[str, list[float]] = {"all": [], "canonical": [], "middle": [], "synonyms": []}
    for text, image in zip(captions, images, strict=True):
        attribute, level, synonym = task.caption_of(text)
        hit = float(level_of(attribute, image) == level)
        hits["all"].append(hit)
        hits["synonyms" if synonym else "middle" if level == 2 else "canonical"].append(hit)
    return {k: statistics.fmean(v) for k, v in hits.items()}


def pair_fidelity(prefs: Path) -> dict[str, float]:
    """Share of the chosen and of the rejected images measured at their caption's level, over a preference
    file's pairs: the painter's only signal in system pairs is the gap between the two, since DPO raises the
    chosen images' likelihood and lowers the rejected ones' given their captions."""
    from PIL import Image

    hits: dict[str, list[float]] = {"chosen": [], "rejected": []}
    for line in prefs.read_text().splitlines():
        pair = json.loads(line)
        for side, found in hits.items():
            for text, path in zip(pair[side]["plan"].split("\n"), pair[side]["image"], strict=True):
                attribute, level, _ = task.caption_of(text)
                with Image.open(prefs.parent / path) as image:
                    found.append(float(level_of(attribute, image) == level))
    return {side: statistics.fmean(found) for side, found in hits.items()}
