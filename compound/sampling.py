"""Run a system forward: ancestral sampling in topological order, each declaration's plate batched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend
from compound.types import Row
from compound.values import as_row, compute, condition, given, plate_sizes, readable


@torch.no_grad()
def sample(
    system: ir.System,
    backends: Mapping[str, Backend],
    inputs: Sequence[Row],
    n: int = 1,
    generator: torch.Generator | None = None,
    **decoding: Any,
) -> list[dict[str, Any]]:
    """n rows per input row, in the data-row format (images as PIL images).

    Decoding options (`temperature`, `max_new_tokens`, `steps`, `guidance_scale`,
    ...) go to every component that knows them; a node's own options in the
    `.cmp` file come first, then the component's.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    sizes = plate_sizes(system)
    runs: list[dict[str, Any]] = []
    for k, row in enumerate(inputs):
        start = {
            node.name: _checked(node, given(node, row, f"input row {k}", sizes), f"input row {k}")
            for node in system.nodes
            if isinstance(node, ir.InputNode)
        }
        runs += [dict(start) for _ in range(n)]
    for declaration in _declarations(system):
        head = declaration[0]
        if isinstance(head, ir.ComputeNode):
            computed = [node for node in declaration if isinstance(node, ir.ComputeNode)]
            for values in runs:
                for computing in computed:
                    values[computing.name] = compute(computing, values)
        elif isinstance(head, ir.SampleNode):
            members = [node for node in declaration if isinstance(node, ir.SampleNode)]
            backend = backends[head.component]
            options = {
                **_known(backend, system.component(head.component).options),
                **_known(backend, head.options),
                **_known(backend, decoding),
            }
            conditions = [condition(node, values) for values in runs for node in members]
            outputs = iter(backend.sample(conditions, generator, **options))
            for values in runs:
                for node in members:
                    values[node.name] = next(outputs)
    return [as_row(system, values) for values in runs]


def _checked(node: ir.InputNode, value: Any, label: str) -> Any:
    """An input value, after checking it is usable (sizes within the limits, images readable)."""
    readable(node, value, label)
    return value


def _declarations(system: ir.System) -> list[list[ir.Node]]:
    """Nodes grouped by declaration (a plate's members together), in topological order."""
    groups: dict[str, list[ir.Node]] = {}
    for node in system.nodes:
        groups.setdefault(node.base, []).append(node)
    return list(groups.values())


def _known(backend: Backend, options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in backend.sampling}
