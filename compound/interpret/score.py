"""`Score`: every factor of a batch of runs through the backends, one pass per component.

At each sampled site the handler turns every run's value of every member, and
the text it is conditioned on, into its component's item (`Backend.prepare`)
with its random draws (`Backend.draws`, from the run's seed for that factor);
`Score.result` then scores every item of one component in as few forward
passes as its `batch_size` allows, the nodes in factor order. Random draws
(diffusion timesteps and noise) come from one seed per (run, factor), so batched
and one-at-a-time scoring agree and the same seeds give the same numbers; the
two sides of a pair share their seeds. The reference scores are computed before
the policy's, so that their activations are freed before the policy's graph is
built; scores of `cached` components come precomputed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend, node_options
from compound.diagnostics import error
from compound.interpret import Handler, Runs, Site, interpret
from compound.interpret.given import Given
from compound.types import Row, Scores, Sides
from compound.values import condition, row_error


def draw_seeds(pairs: int, factors: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One seed per (pair, factor), drawn from `generator` in a fixed order: [pairs, factors]."""
    return torch.randint(0, 2**62, (pairs, factors), generator=generator)


def check_pairs(chosen: Sequence[Row], rejected: Sequence[Row]) -> None:
    """Chosen and rejected rows come in pairs."""
    if len(chosen) != len(rejected):
        raise error("row", f"{len(chosen)} chosen rows but {len(rejected)} rejected rows: they come in pairs")


class Paired(Handler):
    """Runs 2k and 2k + 1 are the chosen and rejected sides of pair k: they must share their inputs."""

    def input(self, site: Site, runs: Runs) -> Runs:
        for k in range(len(runs) // 2):
            for node in site.nodes:
                if runs[2 * k][node.name] != runs[2 * k + 1][node.name]:
                    raise row_error(
                        f"pair {k}",
                        node,
                        "differs between the chosen and the rejected row; a pair shares its inputs",
                    )
        return runs


class Score(Handler):
    """Every factor's prepared item and draws per run (`seeds[j, f]`: run j's seed for factor f);
    components in `frozen` are left out."""

    def __init__(
        self,
        system: ir.System,
        backends: Mapping[str, Backend],
        seeds: torch.Tensor,
        frozen: Collection[str] = (),
        inner: Handler | None = None,
    ) -> None:
        super().__init__(inner)
        self.system, self.backends, self.seeds, self.frozen = system, backends, seeds, frozen
        self.factor = {factor.node: f for f, factor in enumerate(system.factors)}
        self.items: dict[str, list[Any]] = {}
        self.draws: dict[str, list[Any]] = {}

    def sample(self, site: Site, runs: Runs) -> Runs:
        for node in site.nodes:
            assert isinstance(node, ir.SampleNode)
            if node.component in self.frozen:
                continue
            backend, f = self.backends[node.component], self.factor[node.name]
            options = node_options(node)
            items = [backend.prepare(condition(node, values), values[node.name], options) for values in runs]
            self.items[node.name] = items
            self.draws[node.name] = [
                backend.draws(int(self.seeds[j, f]), item) for j, item in enumerate(items)
            ]
        return runs

    def result(
        self, runs: int, reference: bool = True, cached: Mapping[str, Sides] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Policy scores (with gradients), reference scores (if `reference`; `cached`: precomputed ones
        of `cached`-reference components, by node, as (chosen, rejected) of pairs) and sizes of every
        scored factor, each a [runs] tensor by node."""
        work = []  # per component: its backend, its factors' nodes and their items and draws
        for name, backend in self.backends.items():
            nodes = [f.node for f in self.system.factors if f.component == name and f.node in self.items]
            if nodes:
                items = [item for node in nodes for item in self.items[node]]
                draws = [d for node in nodes for d in self.draws[node]]
                work.append((backend, nodes, items, draws))
        given = cached or {}
        ref: dict[str, torch.Tensor] = {}
        for backend, nodes, items, draws in work if reference else []:
            if backend.reference_strategy != "cached":
                ref.update(_by_node(backend.score(items, draws, reference=True), nodes, runs))
            elif lacking := [node for node in nodes if node not in given]:
                raise backend.error(
                    f"reference='cached', but no reference cache was given for {', '.join(lacking)}: "
                    "build one with CompiledSystem.reference_cache"
                )
            else:
                ref.update({node: torch.stack(given[node], dim=1).reshape(-1) for node in nodes})
        policy: dict[str, torch.Tensor] = {}
        sizes: dict[str, torch.Tensor] = {}
        for backend, nodes, items, draws in work:
            policy.update(_by_node(backend.score(items, draws), nodes, runs))
            lengths = torch.tensor([backend.size(i) for i in items], dtype=torch.float)
            sizes.update(_by_node(lengths, nodes, runs))
        return policy, ref, sizes


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
    check_pairs(chosen, rejected)
    rows = [row for pair in zip(chosen, rejected, strict=True) for row in pair]
    labels = [f"{side} row {k}" for k in range(len(chosen)) for side in ("chosen", "rejected")]
    scoring = Score(
        system, backends, seeds.repeat_interleave(2, dim=0), frozen, inner=Paired(Given(system, rows, labels))
    )
    interpret(system, scoring, [{} for _ in rows])
    policy, ref, sizes = scoring.result(len(rows), reference, cached)
    return Scores(_sides(policy), _sides(ref), _sides(sizes), seeds)


def _by_node(scores: torch.Tensor, nodes: list[str], runs: int) -> dict[str, torch.Tensor]:
    """Scores laid out node-major, then run, split per node."""
    grid = scores.view(len(nodes), runs)
    return {node: grid[j] for j, node in enumerate(nodes)}


def _sides(table: Mapping[str, torch.Tensor]) -> dict[str, Sides]:
    """Per-run values of runs (chosen 0, rejected 0, chosen 1, ...) as (chosen, rejected) per pair."""
    return {node: (values[0::2], values[1::2]) for node, values in table.items()}
