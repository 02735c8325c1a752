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

A node may have its own beta (`beta=` in the `.cmp` file, `node_betas` in the
training config): then h = sum over nodes n of beta_n * (r_w,n - r_l,n), so a
diffusion node, whose surrogate log ratio runs thousands of times larger than a
token log ratio, and an LLM node are balanced without rescaling either's scores.

A ranked list of N outputs of one input, best first, is scored by the
Plackett-Luce likelihood of its ranking, with h_k = sum over nodes of
beta_n * r_k,n the implicit reward of output k:

    ranked   -sum over k < N - 1 of  log( exp(h_k) / sum over j >= k of exp(h_j) )

which for N = 2 is the sigmoid loss of the pair; `nll` then applies to each
list's best output.

`nll=alpha` adds alpha times the negative log-likelihood of the chosen side's
language-model nodes: for each trained component, averaged over its nodes'
tokens, summed over the components. For one LLM that is TRL's `sft` loss,
which combined with `sigmoid` is RPO (TRL's `loss_type=["sigmoid", "sft"]`,
`loss_weights=[1, alpha]`, formerly `rpo_alpha`). It keeps DPO from moving an
LLM node's likelihood onto malformed outputs (docs/experiments/moa.md shows it happen).
Per component, so that a component is held to its chosen outputs as firmly
whichever others train with it: averaged over every node's tokens at once,
training an aggregator jointly with proposers cut the proposers' NLL weight
by a seventh in `compound demo moa2` (six proposer nodes of seven), and the
proposers trained alone at that weight lost 1.5-5 points (docs/experiments/moa.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn import functional as F

from compound.choices import LossType, values
from compound.types import LogRatio, Sides, total

LOSS_TYPES = values(LossType)


def sysdpo_loss(
    out: LogRatio,
    beta: float = 0.1,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    node_weights: Mapping[str, float] | None = None,
    nll: float = 0.0,
    node_betas: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """The mean SysDPO loss of a batch of pairs.

    `node_weights` rescales nodes' log ratios before they are summed (on top of
    the `weight=` options of the `.cmp` file); `node_betas` gives nodes their own
    beta in place of `beta` (the `.cmp` file's `beta=` options, merged by the caller).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r} is not one of {', '.join(LOSS_TYPES)}")
    _known(out, node_weights, "node_weights")
    _known(out, node_betas, "node_betas")
    if loss_type == "ipo":
        if node_betas:
            raise ValueError("the ipo loss has one beta (its target margin is 1 / (2 beta)): no node_betas")
        weights = node_weights or {}
        delta = total(
            weights.get(n, 1.0) * (c / _size(out, n, 0, c) - r / _size(out, n, 1, r))
            for n, (c, r) in out.per_node.items()
        )
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        chosen, rejected = rewards(out, beta, node_weights, node_betas)
        h = chosen - rejected
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


def rewards(
    out: LogRatio,
    beta: float,
    node_weights: Mapping[str, float] | None = None,
    node_betas: Mapping[str, float] | None = None,
) -> Sides:
    """The implicit rewards of both sides of each pair: sum over nodes of beta_n * weight_n * log ratio_n."""
    if not node_weights and not node_betas:
        return beta * out.chosen, beta * out.rejected
    scale = scales(out.per_node, beta, node_weights, node_betas)
    chosen = total(scale[n] * c for n, (c, _) in out.per_node.items())
    rejected = total(scale[n] * r for n, (_, r) in out.per_node.items())
    return chosen, rejected


def scales(
    nodes: Mapping[str, object],
    beta: float,
    node_weights: Mapping[str, float] | None = None,
    node_betas: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Each node's factor from log ratio to implicit reward: its beta (its own, else `beta`) times its
    weight (`node_weights`, else 1)."""
    weights, betas = node_weights or {}, node_betas or {}
    return {n: betas.get(n, beta) * weights.get(n, 1.0) for n in nodes}


def plackett_luce_loss(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The mean negative log-likelihood of L rankings under Plackett-Luce.

    `scores` [L, N] are the items' implicit rewards, best first; list l ranks its first `lengths[l]`
    items (the rest is padding). Per list, -sum over k < n - 1 of
    (s_k - log sum_{j >= k} exp s_j); for n = 2 that is DPO's -logsigmoid(s_0 - s_1).
    """
    positions = torch.arange(scores.shape[1], device=scores.device)
    ranked = positions[None, :] < lengths[:, None].to(scores.device)
    # padding far below any score (finite, so that no gradient turns into a NaN)
    floor = scores.detach().masked_fill(~ranked, 0.0).abs().amax() * 4 + 1e4
    padded = torch.where(ranked, scores, -floor)
    tails = torch.logcumsumexp(padded.flip(-1), dim=-1).flip(-1)
    chosen = positions[None, :] < (lengths[:, None].to(scores.device) - 1)
    return -torch.where(chosen, padded - tails, torch.zeros_like(padded)).sum(-1).mean()


def chosen_nll(out: LogRatio, pairs: Sequence[int] | None = None) -> torch.Tensor:
    """Negative log-likelihood of the chosen side's language-model nodes, per token of each trained
    component, summed over the components (of the pairs at `pairs` only, when given: a ranked list's best
    output is the chosen side of its first pair)."""
    components: dict[str, list[str]] = {}
    for node in out.policy:  # in factor order: the same sums on every run
        if node in out.exact:
            components.setdefault(out.exact[node], []).append(node)
    if not components:
        return torch.zeros((), device=out.chosen.device)
    pick = slice(None) if pairs is None else torch.tensor(list(pairs), dtype=torch.long)
    return total(
        -total(out.policy[n][0][pick].sum() for n in nodes)
        / total(out.sizes[n][0][pick].sum() for n in nodes)
        for nodes in components.values()
    )


def _known(out: LogRatio, table: Mapping[str, float] | None, what: str) -> None:
    unknown = set(table or {}) - set(out.per_node)
    if unknown:
        raise ValueError(f"{what} names no node of the system: {', '.join(sorted(unknown))}")


def _size(out: LogRatio, node: str, side: int, like: torch.Tensor) -> torch.Tensor:
    if node not in out.sizes:
        return torch.ones_like(like)
    return out.sizes[node][side].to(like.device).clamp(min=1.0)
