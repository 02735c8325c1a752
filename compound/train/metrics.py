"""A training step's metrics from its log ratios: a pure function of tensors already gathered."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from compound.types import Sides


def step_metrics(
    loss: float,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    per_node: Mapping[str, Sides],
) -> dict[str, float]:
    """Loss, rewards, margins and accuracies of the system and of each node over a global batch.

    `chosen`, `rejected` and `per_node` are implicit rewards (each node's beta times its weighted log
    ratio); a node's share is its mean margin over the sum of every node's |mean margin|: which
    component the preferences credit.
    """
    margin = chosen - rejected
    m: dict[str, float] = {
        "loss": loss,
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margin": margin.mean().item(),
        "rewards/accuracy": (margin > 0).float().mean().item(),
    }
    margins = {}
    for node, (c, r) in per_node.items():
        gap = c - r
        margins[node] = gap.mean().item()
        m[f"nodes/{node}/margin"] = margins[node]
        m[f"nodes/{node}/accuracy"] = (gap > 0).float().mean().item()
    scale = sum(abs(v) for v in margins.values()) or 1.0
    m.update({f"nodes/{node}/share": v / scale for node, v in margins.items()})
    return m
