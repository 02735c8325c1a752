"""`Candidates`: assignments of a row's missing intermediate nodes, for SysDPO-Sampling.

A pair that gives only inputs and outputs trains through the marginal over its
missing intermediates (`compound.estimators.marginal`), approximated on a few
candidate assignments drawn from the current policy: the first missing node in
the walk's order gets up to k distinct values from its backend's `candidates`
(diverse beam search, `beam`, or independent draws, `sample`), turning the one
run into k; each later missing node is decoded once per run (greedily with
`beam`). Only the inputs and the given nodes they depend on are needed:
missing outputs are not drawn.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from compound import ir
from compound.backends.base import Backend
from compound.interpret import Handler, Runs, Site, interpret
from compound.interpret.given import Given
from compound.types import Assignment, Row
from compound.values import condition, missing


class Candidates(Handler):
    """Draw the nodes in `gone`: k distinct values of the first, one per run of each later one."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        gone: set[str],
        k: int,
        strategy: str,
        generator: torch.Generator,
        inner: Handler | None = None,
    ) -> None:
        super().__init__(inner)
        self.backends, self.gone, self.k, self.strategy, self.generator = (
            backends,
            gone,
            k,
            strategy,
            generator,
        )
        self.first: str | None = None  # the node whose candidates fanned the run out

    def sample(self, site: Site, runs: Runs) -> Runs:
        for node in site.nodes:
            if node.name not in self.gone:
                continue
            assert isinstance(node, ir.SampleNode)
            backend = self.backends[node.component]
            options = backend.sampling_options(node)
            if self.first is None:
                known = runs[0]
                found = backend.candidates(
                    condition(node, known), self.k, self.strategy, self.generator, **options
                )
                runs = [{**known, node.name: value} for value in found]
                self.first = node.name
            else:
                for values in runs:
                    values[node.name] = backend.candidates(
                        condition(node, values), 1, self.strategy, self.generator, **options
                    )[0]
        return runs


def candidates(
    system: ir.System,
    backends: Mapping[str, Backend],
    row: Row,
    k: int,
    strategy: str,
    generator: torch.Generator,
    label: str = "row",
) -> list[Assignment]:
    """Up to k distinct assignments of the row's missing intermediate nodes, from the current policy."""
    outputs = set(system.outputs)
    gone = {n.name for n in missing(system, row) if n.name not in outputs}
    if not gone:
        return [{}]
    given = Given(system, [row], [label], nodes="present", broadcast=True)
    runs = interpret(system, Candidates(backends, gone, k, strategy, generator, inner=given), [{}])
    return [{name: values[name] for name in gone} for values in runs]
