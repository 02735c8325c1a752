"""SysDPO-Sampling: rows that hold only the outputs train through the marginal over intermediates.

A pair whose rows lack some intermediate sampled nodes y (they give the inputs x
and the outputs z) is scored through log p(z | x) = log sum_y p(y | x) p(z | y),
approximated on K candidate assignments y^1..y^K of the missing nodes
(docs/method.md, "Two variants"):

    log p(z | x)  ~  logsumexp_a  sum over factors f of  weight_f * score_f(y^a, z)

computed in log space. The same candidates serve the policy and the reference
and both sides of the pair (they depend on x only), so the log ratio compares
like with like. With candidates that cover every possible y the estimate is
exact; with fewer it is a lower bound of the marginal.

Candidates come from the system itself (`compound.interpret.candidates`): for
the first missing node in the walk's order by the backend's `candidates`
(diverse beam search, `beam`, or independent draws, `sample`), each later
missing node decoded once per candidate (greedily with `beam`). Only text
intermediates are marginalized.

A node's share of a Sampling row's log ratio uses the identity
logsumexp(s) = sum_a w_a s_a + H(w), w = softmax(s): each node gets its
posterior-weighted log ratio, and the entropy difference H(w_policy) - H(w_ref)
goes to the first missing node, so the shares add up to the total exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend
from compound.estimators.direct import exact_nodes
from compound.interpret import sites
from compound.interpret.score import draw_seeds, score
from compound.types import Assignment, LogRatio, Row, Scores, Sides, total


def log_marginal(
    system: ir.System,
    backends: Mapping[str, Backend],
    rows: Sequence[Row],
    found: Sequence[Sequence[Assignment]],
    seeds: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The policy's estimate of log p(outputs | inputs) for each row, summed over its candidates."""
    grids = _grids(system, backends, rows, rows, found, seeds, generator)
    return torch.logsumexp(grids.total(grids.scores.policy, 0), dim=1)


def log_ratio(
    system: ir.System,
    backends: Mapping[str, Backend],
    chosen: Sequence[Row],
    rejected: Sequence[Row],
    found: Sequence[Sequence[Assignment]],
    seeds: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LogRatio:
    """Log ratios of output-only pairs through the marginal over their candidates `found[k]`."""
    grids = _grids(system, backends, chosen, rejected, found, seeds, generator)
    factors, scores = system.factors, grids.scores
    # The entropy term of each pair goes to its first missing node in the walk's order (whose
    # candidates fanned the run out).
    walk = [node.name for site in sites(system) for node in site.nodes]
    firsts = [next((name for name in walk if name in a[0]), None) for a in found]
    per_node: dict[str, tuple[Any, Any]] = {}
    policy: dict[str, tuple[Any, Any]] = {}
    sizes: dict[str, tuple[Any, Any]] = {}
    totals = []
    for side in (0, 1):
        total_policy, total_ref = grids.total(scores.policy, side), grids.total(scores.reference, side)
        w_policy, w_ref = torch.softmax(total_policy, dim=1), torch.softmax(total_ref, dim=1)
        totals.append(torch.logsumexp(total_policy, dim=1) - torch.logsumexp(total_ref, dim=1))
        for f in factors:
            part = grids.mean(w_policy, f.weight * scores.policy[f.node][side]) - grids.mean(
                w_ref, f.weight * scores.reference[f.node][side]
            )
            first = torch.tensor([name == f.node for name in firsts], device=grids.device)
            part = part + torch.where(first, _entropy(w_policy) - _entropy(w_ref), 0.0)
            per_node[f.node] = _set(per_node.get(f.node, ((), ())), side, part)
            policy[f.node] = _set(
                policy.get(f.node, ((), ())), side, grids.mean(w_policy, scores.policy[f.node][side])
            )
            size = grids.mean(w_policy.detach(), scores.sizes[f.node][side].to(grids.device))
            sizes[f.node] = _set(sizes.get(f.node, ((), ())), side, size)
    return LogRatio(
        chosen=totals[0],
        rejected=totals[1],
        per_node=per_node,
        policy=policy,
        sizes=sizes,
        exact=exact_nodes(system, backends),
    )


class _Grids:
    """Every factor's scores for every (pair, candidate), laid out as [pairs, candidates] grids."""

    def __init__(
        self,
        scores: Scores,
        factors: Sequence[ir.Factor],
        where: list[tuple[int, int]],
        pairs: int,
        width: int,
    ):
        self.scores, self.factors, self.pairs, self.width = scores, factors, pairs, width
        self.device = next(iter(scores.policy.values()))[0].device if scores.policy else torch.device("cpu")
        self.rows = torch.tensor([k for k, _ in where], device=self.device)
        self.cols = torch.tensor([a for _, a in where], device=self.device)

    def grid(self, values: torch.Tensor, fill: float = float("-inf")) -> torch.Tensor:
        out = torch.full((self.pairs, self.width), fill, device=self.device)
        return out.index_put((self.rows, self.cols), values.to(self.device))

    def total(self, table: Mapping[str, Sides], side: int) -> torch.Tensor:
        """Each candidate's summed, weighted score: -inf where a pair has fewer candidates."""
        return self.grid(total(f.weight * table[f.node][side] for f in self.factors))

    def mean(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The weighted mean over candidates of one factor's values."""
        return (weights * self.grid(values, fill=0.0)).sum(1)


def _grids(
    system: ir.System,
    backends: Mapping[str, Backend],
    chosen: Sequence[Row],
    rejected: Sequence[Row],
    found: Sequence[Sequence[Assignment]],
    seeds: torch.Tensor | None,
    generator: torch.Generator | None,
) -> _Grids:
    """Score every (pair, candidate): a candidate completes both rows of its pair; one seed row a pair."""
    factors = system.factors
    if seeds is None:
        seeds = draw_seeds(len(chosen), len(factors), generator)
    where, full_c, full_r, full_seeds = [], [], [], []
    for k, (c, r, assignments) in enumerate(zip(chosen, rejected, found, strict=True)):
        for a, assignment in enumerate(assignments):
            where.append((k, a))
            full_c.append({**c, **assignment})
            full_r.append({**r, **assignment})
            full_seeds.append(seeds[k])
    scores = score(system, backends, full_c, full_r, torch.stack(full_seeds))
    return _Grids(scores, factors, where, len(chosen), max(len(f) for f in found))


def _entropy(w: torch.Tensor) -> torch.Tensor:
    return -(w * torch.log(w.clamp_min(1e-30))).sum(1)


def _set(pair: tuple[Any, Any], side: int, value: torch.Tensor) -> tuple[Any, Any]:
    return (value, pair[1]) if side == 0 else (pair[0], value)
