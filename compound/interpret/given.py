"""`Given`: the node values data rows give, for the walk.

Run j reads row j (or, `broadcast`, every run the one row: SysDPO-Sampling's
candidates share their row). `nodes` says which sites it fills: every input
and sampled node (`"all"`, a complete row: scoring), the inputs only
(`"inputs"`: a handler above it draws the rest), or what a row has
(`"present"`). With `check` each value is also checked usable (text within the
limits, images readable; each distinct row once); with `collect` mistakes are gathered
in `problems` instead of raised (validating preference files: every mistake of
a row at once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from compound import ir
from compound.diagnostics import CompoundError, Diagnostic
from compound.interpret import Handler, Runs, Site, interpret
from compound.limits import DEFAULT, Limits
from compound.types import Row
from compound.values import given, plate_sizes, readable


class Given(Handler):
    """Values of inputs and sampled nodes read from the runs' rows."""

    def __init__(
        self,
        system: ir.System,
        rows: Sequence[Row],
        labels: Sequence[str],
        nodes: Literal["all", "inputs", "present"] = "all",
        check: bool = False,
        broadcast: bool = False,
        collect: bool = False,
        skip: frozenset[str] = frozenset(),
        limits: Limits = DEFAULT,
        inner: Handler | None = None,
    ) -> None:
        super().__init__(inner)
        self.rows, self.labels, self.nodes = rows, labels, nodes
        self.check, self.broadcast, self.skip, self.limits = check, broadcast, skip, limits
        self.sizes = plate_sizes(system)
        self.problems: list[Diagnostic] | None = [] if collect else None
        self._checked: set[tuple[int, str]] = set()

    def input(self, site: Site, runs: Runs) -> Runs:
        return self._give(site, runs)

    def sample(self, site: Site, runs: Runs) -> Runs:
        return runs if self.nodes == "inputs" else self._give(site, runs)

    def _give(self, site: Site, runs: Runs) -> Runs:
        for j, values in enumerate(runs):
            k = 0 if self.broadcast else j
            row, label = self.rows[k], self.labels[k]
            for node in site.nodes:
                if node.name in self.skip:
                    continue
                if self.nodes == "present" and node.name not in row and node.base not in row:
                    continue
                try:
                    value = given(node, row, label, self.sizes)
                    if self.check and (id(row), node.name) not in self._checked:
                        self._checked.add((id(row), node.name))
                        readable(node, value, label, self.limits)
                except CompoundError as e:
                    if self.problems is None:
                        raise
                    seen = {d.message for d in self.problems}  # a plate's members share most problems
                    self.problems += [d for d in e.diagnostics if d.message not in seen]
                    continue
                values[node.name] = value
        return runs


def given_values(system: ir.System, row: Mapping[str, Any], label: str) -> dict[str, Any]:
    """Every node's value for one complete row (inputs and sampled nodes given, computed nodes
    evaluated)."""
    return interpret(system, Given(system, [row], [label]), [{}])[0]


def problems(
    system: ir.System,
    row: Mapping[str, Any],
    label: str,
    skip: frozenset[str] = frozenset(),
    limits: Limits = DEFAULT,
) -> list[Diagnostic]:
    """Everything wrong with one row: every missing or mistyped node, every unreadable image (nodes in
    `skip`, those SysDPO-Sampling sums over, are not looked for)."""
    found = Given(system, [row], [label], check=True, collect=True, skip=skip, limits=limits)
    interpret(system, found, [{}])
    assert found.problems is not None
    return found.problems
