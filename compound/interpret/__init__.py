"""The one walk over a system's graph, `interpret`, and what a handler is.

A *run* is one execution of the system: a dict of node values filled in as the
walk goes. `interpret(system, handler, runs)` visits the system's declarations
in topological order, a plate's members together (a `Site`), and at each site
hands the runs to the handler, which gives or draws the values of inputs and
sampled nodes, or observes them; computed nodes the interpreter evaluates
itself (deterministic built-in functions) in every run whose parents are known.

Everything that runs a system is a handler on this walk, one effect per file,
as Pyro's poutine has one interpreter and one messenger per effect:

- `given.Given`: the values a data row gives (rows of preference data);
- `sample.Sample`: ancestral sampling through the components' backends;
- `candidates.Candidates`: SysDPO-Sampling's assignments of missing nodes;
- `score.Score`: every factor's item, scored per component in batches;
- `trace.Trace`: a per-node record of any run (prompt, parents, value, scores).

Handlers stack: one built on `inner` lets the inner one act at each site first
and then acts on what it produced (`Trace(Score(Given(...)))`: the row's values,
then their factors' items, then the record). A new effect is a subclass that
overrides `input`, `sample` or `compute`; the interpreter does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from compound import ir
from compound.values import compute

#: The runs of a walk: one dict of node values per execution of the system.
Runs = list[dict[str, Any]]


@dataclass(frozen=True)
class Site:
    """One declaration of the system as the walk meets it: its kind and its nodes (a plate's members,
    in order, or the one node)."""

    kind: Literal["input", "sample", "compute"]
    nodes: tuple[ir.Node, ...]

    @property
    def name(self) -> str:
        """The declaration's name (`image` for the site of `image[0]`, `image[1]`, ...)."""
        return self.nodes[0].base


class Handler:
    """What a walk does at each site. Override `input`, `sample` or `compute`: each gets the site and the
    runs (after `inner`'s turn, if any) and returns the runs, in place or anew (SysDPO-Sampling's
    candidates turn one run into several)."""

    def __init__(self, inner: Handler | None = None) -> None:
        self.inner = inner

    def visit(self, site: Site, runs: Runs) -> Runs:
        """The inner handler's turn, then this one's."""
        if self.inner is not None:
            runs = self.inner.visit(site, runs)
        if site.kind == "input":
            return self.input(site, runs)
        if site.kind == "sample":
            return self.sample(site, runs)
        return self.compute(site, runs)

    def input(self, site: Site, runs: Runs) -> Runs:
        return runs

    def sample(self, site: Site, runs: Runs) -> Runs:
        return runs

    def compute(self, site: Site, runs: Runs) -> Runs:
        return runs


def sites(system: ir.System) -> list[Site]:
    """The system's declarations in the order the walk visits them: each at its first node in
    topological order, all of a plate's members together."""
    groups: dict[str, list[ir.Node]] = {}
    for node in system.nodes:
        groups.setdefault(node.base, []).append(node)
    return [Site(nodes[0].kind, tuple(nodes)) for nodes in groups.values()]


def interpret(system: ir.System, handler: Handler, runs: Sequence[dict[str, Any]]) -> Runs:
    """Walk the system once over `runs` with `handler`; the runs, filled in."""
    found = list(runs)
    for site in sites(system):
        if site.kind == "compute":
            for values in found:
                for node in site.nodes:
                    assert isinstance(node, ir.ComputeNode)
                    if all(p in values for p in node.parents):
                        values[node.name] = compute(node, values)
        found = handler.visit(site, found)
    return found
