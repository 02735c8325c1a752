"""Scoring the progression system's samples: the paper's two metrics, and where errors come from."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from compound.demo import progression as task
from compound.scorers import Progression

SCORERS = {a.name: Progression(field="image", measure=a.measure) for a in task.ATTRIBUTES}


def score(row: Mapping[str, Any], request: task.Request) -> tuple[float, bool]:
    """(preference score q, order consistency) of one sampled row for its request."""
    scorer = SCORERS[request.attribute]
    row = {**row, "direction": request.direction}
    return scorer(row), scorer.ordered(row)


def plan_quality(plan: str, request: task.Request) -> dict[str, float]:
    """Whether a plan is well formed, names the requested attribute, is ordered, and uses canonical words."""
    lines = [task.parse(line) for line in plan.split("\n")]
    ok = len(lines) == 3 and all(p is not None for p in lines)
    if not ok:
        return {"valid": 0.0, "right_attribute": 0.0, "ordered": 0.0, "canonical": 0.0}
    attribute_ok = all(p[0].name == request.attribute for p in lines)  # type: ignore[index]
    levels = [p[1] for p in lines]  # type: ignore[index]
    steps = [request.direction * (b - a) for a, b in itertools.pairwise(levels)]
    return {
        "valid": 1.0,
        "right_attribute": float(attribute_ok),
        "ordered": float(all(s > 0 for s in steps)),
        "canonical": sum(not p[2] for p in lines) / 3,
    }  # type: ignore[index]


def summarize(rows: Sequence[Mapping[str, Any]], requests: Sequence[task.Request]) -> dict[str, float]:
    """Mean q, order consistency, and the plans' quality over rows sampled for `requests` (in order)."""
    scored = [score(row, request) for row, request in zip(rows, requests, strict=True)]
    plans = [plan_quality(row["plan"], request) for row, request in zip(rows, requests, strict=True)]
    out = {
        "q": statistics.fmean(q for q, _ in scored),
        "order": statistics.fmean(float(o) for _, o in scored),
    }
    out |= {f"plan_{k}": statistics.fmean(p[k] for p in plans) for k in plans[0]}
    return out
