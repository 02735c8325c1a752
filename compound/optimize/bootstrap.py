"""Bootstrapped demonstrations, as DSPy's BootstrapFewShot (with random search) finds them.

The system runs every training example with its current text; the rollouts
that score at least `threshold` are its good traces. Each node declaration with
`demos=K` gets its demonstrations from them: the prompt the node was given and
the output it gave, in a good trace. Candidate sets are tried in a fixed order:
none (the system as it is), the first K good traces of each node, then random
sets of K (drawn from the seed), up to `budget` sets; the set with the best
mean score on the validation examples wins (the earlier one on a tie). Small
models bootstrap well: the demonstrations are their own best outputs.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import Any

from compound import ir
from compound.diagnostics import error
from compound.optimize.evaluate import Rollouts
from compound.text import Text, room


def pools(system: ir.System, good: Sequence[Any]) -> dict[str, list[ir.Demo]]:
    """Each `demos=K` declaration's demonstrations from the good rollouts: every member's prompt and
    output, each distinct pair once, in rollout order."""
    found: dict[str, list[ir.Demo]] = {}
    for base in room(system):
        members = [n.name for n in system.nodes if n.base == base]
        shots = [
            ir.Demo(prompt=r.steps[m].prompt or "", output=str(r.steps[m].value))
            for r in good
            for m in members
        ]
        found[base] = list(dict.fromkeys(shots))
    return found


def candidates(system: ir.System, base: Text, good: Sequence[Any], budget: int, seed: int) -> list[Text]:
    """The candidate texts, in the order they are tried: `base`, the first K, then random sets of K."""
    sizes, found = room(system), pools(system, good)
    texts = [base]
    first = {b: tuple(found[b][: sizes[b]]) for b in sizes if found[b]}
    if first:
        texts.append(Text(dict(base.params), {**base.demos, **first}))
    draw = random.Random(seed)
    tries = 0
    while len(texts) < budget and first and tries < 20 * budget:
        tries += 1
        picked = {b: tuple(draw.sample(found[b], min(sizes[b], len(found[b])))) for b in first}
        text = Text(dict(base.params), {**base.demos, **picked})
        if text.key() not in {t.key() for t in texts}:
            texts.append(text)
    return texts[:budget]


def search(
    system: ir.System,
    rollouts: Rollouts,
    base: Text,
    train: Sequence[str],
    val: Sequence[str],
    budget: int,
    threshold: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Every candidate set tried, with its validation score; the first of the best is `best`."""
    if not room(system):
        raise error("config", "bootstrap gives nodes demonstrations: give a node demos=K in the .cmp file")
    good = [r for r in rollouts.run(base, train) if r.score >= threshold]
    tried = []
    for text in candidates(system, base, good, budget, seed):
        scores = [r.score for r in rollouts.run(text, val)]
        tried.append({"text": text, "score": statistics.fmean(scores), "good_traces": len(good)})
    return tried
