"""A training step's metrics from its log ratios: a pure function of tensors already gathered.

Names are TRL's `DPOTrainer`'s where a metric means the same thing (`rewards/chosen`,
`rewards/rejected`, `rewards/margins`, `rewards/accuracies`, `logps/chosen`, `logps/rejected`), so
dashboards built for TRL read them; each node's own under `nodes/NODE/`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from compound.types import Sides


def step_metrics(
    loss: float,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    per_node: Mapping[str, Sides],
    logps: Sides | None = None,
) -> dict[str, float]:
    """Loss, rewards, margins and accuracies of the system and of each node over a global batch.

    `chosen`, `rejected` and `per_node` are implicit rewards (each node's beta times its weighted log
    ratio); a node's share is its mean margin over the sum of every node's |mean margin|: which
    component the preferences credit. `logps` are the policy's log-probabilities of both sides (the
    exact, language-model nodes' summed; None when the system has none).
    """
    margin = chosen - rejected
    m: dict[str, float] = {
        "loss": loss,
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": margin.mean().item(),
        "rewards/accuracies": (margin > 0).float().mean().item(),
    }
    if logps is not None:
        m["logps/chosen"], m["logps/rejected"] = logps[0].mean().item(), logps[1].mean().item()
    margins = {}
    for node, (c, r) in per_node.items():
        gap = c - r
        margins[node] = gap.mean().item()
        m[f"nodes/{node}/margins"] = margins[node]
        m[f"nodes/{node}/accuracies"] = (gap > 0).float().mean().item()
    scale = sum(abs(v) for v in margins.values()) or 1.0
    m.update({f"nodes/{node}/share": v / scale for node, v in margins.items()})
    return m
