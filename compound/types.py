"""The run time's data: rows, per-node scores and system log ratios. Imports nothing of the project.

Tensors of a batch of B pairs come as `Sides`: (chosen [B], rejected [B]).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: A data row: node names to values (text, an image or its path, a list for a plate).
Row = Mapping[str, Any]
#: A quantity of every pair of a batch: (chosen side [B], rejected side [B]).
Sides = tuple[torch.Tensor, torch.Tensor]
#: Values of a row's missing intermediate nodes (SysDPO-Sampling), by node name.
Assignment = dict[str, Any]


@dataclass
class Scores:
    """Raw scores of every scored factor on both sides, by node: the policy's (with gradients), the
    reference's, each value's size (tokens for a causal LM, 1 otherwise), and the seeds of the draws
    ([pairs, factors])."""

    policy: dict[str, Sides]
    reference: dict[str, Sides]
    sizes: dict[str, Sides]
    seeds: torch.Tensor


@dataclass
class LogRatio:
    """System log ratios log p_theta(s|x) - log p_ref(s|x) of B chosen and B rejected rows.

    `per_node` breaks the totals down by node (weights applied); `policy` holds
    the policy's own scores (log-probabilities, or the diffusion surrogate), with
    gradients, for terms such as an NLL on the chosen side; `sizes` each node
    value's size (its tokens for a causal LM, 1 otherwise); `exact` the nodes
    whose score is an exact log-likelihood, with their component. Nodes of
    frozen components have a log ratio of zero and no policy scores.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    per_node: dict[str, Sides]
    policy: dict[str, Sides]
    sizes: dict[str, Sides]
    exact: Mapping[str, str]


def total(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """The sum of one or more tensors, left to right (what Python's `sum` gives, typed)."""
    return functools.reduce(operator.add, terms)


def merge(parts: Sequence[LogRatio], order: torch.Tensor) -> LogRatio:
    """Log ratios of disjoint groups of pairs, concatenated and put back in the pairs' `order`."""

    def cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(tensors))[order.to(tensors[0].device)]

    def both(tables: Sequence[Mapping[str, Sides]]) -> dict[str, Sides]:
        nodes = [n for n in tables[0] if all(n in t for t in tables)]
        return {n: (cat([t[n][0] for t in tables]), cat([t[n][1] for t in tables])) for n in nodes}

    return LogRatio(
        chosen=cat([p.chosen for p in parts]),
        rejected=cat([p.rejected for p in parts]),
        per_node=both([p.per_node for p in parts]),
        policy=both([p.policy for p in parts]),
        sizes=both([p.sizes for p in parts]),
        exact=parts[0].exact,
    )
