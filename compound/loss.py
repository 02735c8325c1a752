"""The SysDPO loss family on system log ratios (docs/method.md), with TRL's formulas.

With r_w, r_l the system log ratios of the chosen and rejected outputs
(`LogRatio.chosen`, `.rejected`, node weights applied) and h = beta * (r_w - r_l),
per pair:

    sigmoid  -logsigmoid(h)                                                 (DPO)
    hinge    relu(1 - h)
    ipo      (d - 1 / (2 beta))^2,  d = sum over nodes of r_w,n / |w_n| - r_l,n / |l_n|
    robust   (-(1 - eps) logsigmoid(h) + eps logsigmoid(-h)) / (1 - 2 eps)  (label smoothing eps)

averaged over the pairs. For IPO, TRL divides a completion's log ratio by its
token count; on a system each node's log ratio is divided by its value's size
(tokens for a causal LM node, 1 for others), which is TRL's IPO exactly for a
single-LLM system.

`nll=alpha` adds alpha times the negative log-likelihood of the chosen side's
language-model nodes, averaged over their tokens: TRL's `sft` loss, which
combined with `sigmoid` is RPO (TRL's `loss_type=["sigmoid", "sft"]`,
`loss_weights=[1, alpha]`, formerly `rpo_alpha`). It keeps DPO from moving an
LLM node's likelihood onto malformed outputs (docs/moa.md shows it happen).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from compound.types import LogRatio, total

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def sysdpo_loss(
    out: LogRatio,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    node_weights: Mapping[str, float] | None = None,
    nll: float = 0.0,
) -> torch.Tensor:
    """The mean SysDPO loss of a batch of pairs.

    `node_weights` rescales nodes' log ratios before they are summed (on top of
    the `weight=` options of the `.cmp` file).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    weights = node_weights or {}
    unknown = set(weights) - set(out.per_node)
    if unknown:
        raise ValueError(f"node_weights names no node of the system: {', '.join(sorted(unknown))}")
    if loss_type == "ipo":
        delta = total(
            weights.get(n, 1.0) * (c / _size(out, n, 0, c) - r / _size(out, n, 1, r))
            for n, (c, r) in out.per_node.items()
        )
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        chosen = (
            total(weights.get(n, 1.0) * c for n, (c, _) in out.per_node.items()) if weights else out.chosen
        )
        rejected = (
            total(weights.get(n, 1.0) * r for n, (_, r) in out.per_node.items()) if weights else out.rejected
        )
        h = beta * (chosen - rejected)
        if loss_type == "sigmoid":
            losses = -F.logsigmoid(h)
        elif loss_type == "hinge":
            losses = torch.relu(1 - h)
        else:
            if not 0.0 <= label_smoothing < 0.5:
                raise ValueError(
                    f"label_smoothing must lie in [0, 0.5) for the robust loss, not {label_smoothing}"
                )
            eps = label_smoothing
            losses = (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)
    loss = losses.mean()
    if nll:
        loss = loss + nll * chosen_nll(out)
    return loss


def chosen_nll(out: LogRatio) -> torch.Tensor:
    """Negative log-likelihood of the chosen side's language-model nodes, per token."""
    nodes = [n for n in out.policy if n in out.exact]  # in factor order: the same sum on every run
    if not nodes:
        return torch.zeros((), device=out.chosen.device)
    logps = total(out.policy[n][0].sum() for n in nodes)
    tokens = total(out.sizes[n][0].sum() for n in nodes)
    return -logps / tokens


def _size(out: LogRatio, node: str, side: int, like: torch.Tensor) -> torch.Tensor:
    if node not in out.sizes:
        return torch.ones_like(like)
    return out.sizes[node][side].to(like.device).clamp(min=1.0)
