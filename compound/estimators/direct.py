"""SysDPO-Direct: pairs that give every sampled node, scored factor by factor.

log_ratio(s | x) = sum over factors f of  weight_f * (score_policy(f) - score_reference(f))
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch

from compound import ir
from compound.backends.base import Backend
from compound.interpret.score import score
from compound.types import LogRatio, Row, Sides


def log_ratio(
    system: ir.System,
    backends: Mapping[str, Backend],
    chosen: Sequence[Row],
    rejected: Sequence[Row],
    seeds: torch.Tensor,
    cached: Mapping[str, Sides] | None = None,
    frozen: Collection[str] = (),
) -> LogRatio:
    """System log ratios of complete pairs; components in `frozen` are not run: their log ratio is 0."""
    scores = score(system, backends, chosen, rejected, seeds, cached=cached, frozen=frozen)
    zero = torch.zeros(len(chosen), device=device(backends))
    per_node: dict[str, Sides] = {}
    for factor in system.factors:
        if factor.node not in scores.policy:
            per_node[factor.node] = (zero, zero)
            continue
        (pc, pr), (rc, rr) = scores.policy[factor.node], scores.reference[factor.node]
        per_node[factor.node] = (factor.weight * (pc - rc), factor.weight * (pr - rr))
    sides = list(zip(*per_node.values(), strict=True)) or [(zero,), (zero,)]
    return LogRatio(
        chosen=torch.stack(sides[0]).sum(0),
        rejected=torch.stack(sides[1]).sum(0),
        per_node=per_node,
        policy=scores.policy,
        sizes=scores.sizes,
        exact=exact_nodes(system, backends),
    )


def exact_nodes(system: ir.System, backends: Mapping[str, Backend]) -> dict[str, str]:
    """The nodes whose score is an exact log-likelihood, and their components."""
    return {f.node: f.component for f in system.factors if backends[f.component].exact}


def device(backends: Mapping[str, Backend]) -> torch.device:
    """Where the components' parameters live (the CPU if they have none)."""
    return next((p.device for b in backends.values() for p in b.parameters()), torch.device("cpu"))
