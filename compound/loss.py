"""The SysDPO loss family on system log ratios (PAPER.md point 4), with TRL's formulas.

With h = beta * (log_ratio(s_w|x) - log_ratio(s_l|x)), per pair:
    sigmoid  -logsigmoid(h)                                        (DPO)
    hinge    relu(1 - h)
    ipo      (h / beta - 1 / (2 beta))^2                           (IPO on the system log ratios)
    robust   (-(1-eps) logsigmoid(h) + eps logsigmoid(-h)) / (1 - 2 eps)   (label smoothing eps)
averaged over pairs. `node_weights` rescales nodes' terms before they are summed.
`nll` adds the mean negative policy score of the chosen side's nodes (TRL's
`rpo_alpha`), the guard against likelihood displacement (DEMO-NOTES.md).

Note on IPO: TRL divides each side's log ratio by its completion's token count
before squaring; a system has no single token count, so here IPO uses the
system log ratios as they are (equal to TRL's for one-token completions).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from compound.emit import LogRatio

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def sysdpo_loss(
    out: LogRatio,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    node_weights: Mapping[str, float] | None = None,
    nll: float = 0.0,
    nll_nodes: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """The mean SysDPO loss of a batch of pairs."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    if node_weights:
        chosen = sum(node_weights.get(n, 1.0) * c for n, (c, _) in out.per_node.items())
        rejected = sum(node_weights.get(n, 1.0) * r for n, (_, r) in out.per_node.items())
    else:
        chosen, rejected = out.chosen, out.rejected
    delta = chosen - rejected
    h = beta * delta
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - h)
    elif loss_type == "ipo":
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(
                f"label_smoothing must lie in [0, 0.5) for the robust loss, not {label_smoothing}"
            )
        eps = label_smoothing
        losses = (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)
    loss = losses.mean()
    if nll:
        weights = nll_nodes if nll_nodes is not None else {n: 1.0 for n in out.policy}
        loss = loss - nll * sum(w * out.policy[n][0].mean() for n, w in weights.items())
    return loss
