"""`Trace`: a per-node record of any run of a system (sampling, scoring, evaluation).

For every run and node: its kind, its component or function, its parents'
values, the text a sampled node is conditioned on (its rendered template, or
its parents one per line), and its value; after scoring (`trace`), each
factor's policy score (log-probability for a language model, the ELBO surrogate
for diffusion), reference score and weighted log ratio, the numbers
`CompiledSystem.log_ratio` sums. Optimizers of a system's text read it: which
prompt a node saw and what came out of it, downstream of a parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend
from compound.diagnostics import error
from compound.interpret import Handler, Runs, Site, interpret
from compound.interpret.given import Given
from compound.interpret.score import Score
from compound.types import Row
from compound.values import condition


@dataclass
class NodeTrace:
    """What one node did in one run."""

    node: str
    kind: str
    value: Any
    parents: dict[str, Any]
    #: The component a sampled node is drawn from, or the function a computed node applies.
    by: str | None = None
    #: The text a sampled node is conditioned on.
    prompt: str | None = None
    #: The policy's score of the value (sampled nodes, once scored).
    score: float | None = None
    reference: float | None = None
    #: weight * (score - reference): the node's term of the system log ratio.
    log_ratio: float | None = None


#: One run's record: every node, in the walk's order.
RunTrace = dict[str, NodeTrace]


class Trace(Handler):
    """Record every node of every run as the handlers inside it fill them in (`records[j]`: run j)."""

    def __init__(self, inner: Handler | None = None) -> None:
        super().__init__(inner)
        self.records: list[RunTrace] = []

    def visit(self, site: Site, runs: Runs) -> Runs:
        runs = super().visit(site, runs)
        if len(self.records) != len(runs):  # the first visit, or candidates fanned one run out
            if len(self.records) > 1:
                raise error("config", f"a traced walk went from {len(self.records)} runs to {len(runs)}")
            start = self.records[0] if self.records else {}
            self.records = [dict(start) for _ in runs]
        for record, values in zip(self.records, runs, strict=True):
            for node in site.nodes:
                if node.name in values:
                    record[node.name] = _record(node, values)
        return runs


def _record(node: ir.Node, values: Mapping[str, Any]) -> NodeTrace:
    parents = {p: values[p] for p in node.parents}
    if isinstance(node, ir.SampleNode):
        return NodeTrace(
            node.name, node.kind, values[node.name], parents, node.component, condition(node, values)
        )
    by = node.function if isinstance(node, ir.ComputeNode) else None
    return NodeTrace(node.name, node.kind, values[node.name], parents, by)


def trace(
    system: ir.System,
    backends: Mapping[str, Backend],
    rows: Sequence[Row],
    seeds: torch.Tensor,
    reference: bool = True,
    frozen: Collection[str] = (),
    scores: bool = True,
) -> list[RunTrace]:
    """Every node of each complete row, with each factor's scores (the draws from `seeds[j]`, [rows,
    factors]: a pair's rows take their pair's seeds, as `log_ratio` does); `scores=False`: what each
    node read and gave only, no model run."""
    scoring = Score(
        system, backends, seeds, frozen, inner=Given(system, rows, [f"row {j}" for j in range(len(rows))])
    )
    traced = Trace(scoring if scores else scoring.inner)
    interpret(system, traced, [{} for _ in rows])
    if not scores:
        return traced.records
    with torch.no_grad():
        policy, ref, _ = scoring.result(len(rows), reference)
    weights = {f.node: f.weight for f in system.factors}
    for j, record in enumerate(traced.records):
        for node, values in policy.items():
            entry = record[node]
            entry.score = float(values[j])
            if node in ref:
                entry.reference = float(ref[node][j])
                entry.log_ratio = float(weights[node] * (values[j] - ref[node][j]))
    return traced.records
