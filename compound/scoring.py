"""Score every factor of a batch of row pairs through the backends: pure functions, one pass per component.

Every factor that uses one component, for every pair and both the chosen and
the rejected side, goes to that component in as few forward passes as its
`batch_size` allows. Random draws (diffusion timesteps and noise) come from one
seed per (pair, factor), given by the caller, so batched and one-at-a-time
scoring agree and the same seeds give the same numbers. The reference scores
are computed before the policy's, so that their activations are freed before
the policy's graph is built; scores of `cached` components come precomputed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend
from compound.diagnostics import error
from compound.types import Row, Scores, Sides
from compound.values import condition, evaluate, row_error


def draw_seeds(pairs: int, factors: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One seed per (pair, factor), drawn from `generator` in a fixed order: [pairs, factors]."""
    return torch.randint(0, 2**62, (pairs, factors), generator=generator)


def check_pairs(chosen: Sequence[Row], rejected: Sequence[Row]) -> None:
    """Chosen and rejected rows come in pairs."""
    if len(chosen) != len(rejected):
        raise error("row", f"{len(chosen)} chosen rows but {len(rejected)} rejected rows: they come in pairs")


def pair_values(
    system: ir.System, chosen: Sequence[Row], rejected: Sequence[Row]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every node's value on both sides of each pair (computed nodes evaluated); a pair shares its inputs."""
    check_pairs(chosen, rejected)
    values = []
    for k, (c_row, r_row) in enumerate(zip(chosen, rejected, strict=True)):
        c = evaluate(system, c_row, f"chosen row {k}")
        r = evaluate(system, r_row, f"rejected row {k}")
        for node in system.nodes:
            if isinstance(node, ir.InputNode) and c[node.name] != r[node.name]:
                raise row_error(
                    f"pair {k}",
                    node,
                    "differs between the chosen and the rejected row; a pair shares its inputs",
                )
        values.append((c, r))
    return values


def score(
    system: ir.System,
    backends: Mapping[str, Backend],
    chosen: Sequence[Row],
    rejected: Sequence[Row],
    seeds: torch.Tensor,
    reference: bool = True,
    cached: Mapping[str, Sides] | None = None,
    frozen: Collection[str] = (),
) -> Scores:
    """Policy and reference scores of every factor of every pair (the reference's only if `reference`).

    `seeds` is [pairs, factors]; `cached` holds the precomputed reference scores of the factors of
    `cached`-reference components, by node; components named in `frozen` are not scored at all.
    """
    values = pair_values(system, chosen, rejected)
    work = []  # per component: its backend, its factors' nodes, and their items and draws
    for name, backend in backends.items():
        if name in frozen:
            continue
        mine = [(f, factor.node) for f, factor in enumerate(system.factors) if factor.component == name]
        items: list[Any] = []
        draws: list[Any] = []
        for f, node_name in mine:
            node = system.node(node_name)
            assert isinstance(node, ir.SampleNode)
            for k, sides in enumerate(values):
                for side in sides:
                    items.append(backend.prepare(condition(node, side), side[node.name], node.options))
                    draws.append(backend.draws(int(seeds[k, f]), items[-1]))
        if mine:
            work.append((backend, [node for _, node in mine], items, draws))
    pairs = len(values)
    given = cached or {}
    ref: dict[str, Sides] = {}
    for backend, nodes, items, draws in work if reference else []:
        if backend.reference_strategy != "cached":
            ref.update(_by_node(backend.score(items, draws, reference=True), nodes, pairs))
        elif missing := [node for node in nodes if node not in given]:
            raise backend.error(
                f"reference='cached', but no reference cache was given for {', '.join(missing)}: "
                "build one with CompiledSystem.reference_cache"
            )
        else:
            ref.update({node: given[node] for node in nodes})
    policy: dict[str, Sides] = {}
    sizes: dict[str, Sides] = {}
    for backend, nodes, items, draws in work:
        policy.update(_by_node(backend.score(items, draws), nodes, pairs))
        lengths = torch.tensor([backend.size(i) for i in items], dtype=torch.float)
        sizes.update(_by_node(lengths, nodes, pairs))
    return Scores(policy, ref, sizes, seeds)


def _by_node(scores: torch.Tensor, nodes: list[str], pairs: int) -> dict[str, Sides]:
    """Scores laid out node-major, then pair, then side (chosen, rejected), split per node."""
    grid = scores.view(len(nodes), pairs, 2)
    return {node: (grid[j, :, 0], grid[j, :, 1]) for j, node in enumerate(nodes)}
