"""`Sample`: run a system forward, ancestral sampling through its components' backends.

At a sampled site, every run's conditioning text for every member of the plate
goes to the component in one `sample` call (the backend batches it), with the
sampling options that component knows (`Backend.sampling_options`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend
from compound.interpret import Handler, Runs, Site, interpret
from compound.interpret.given import Given
from compound.types import Row
from compound.values import as_row, clashes, condition


class Sample(Handler):
    """Draw every sampled node from its component, given its parents' values in each run."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        generator: torch.Generator,
        decoding: Mapping[str, Any] | None = None,
        inner: Handler | None = None,
    ) -> None:
        super().__init__(inner)
        self.backends, self.generator, self.decoding = backends, generator, dict(decoding or {})

    def sample(self, site: Site, runs: Runs) -> Runs:
        members = [node for node in site.nodes if isinstance(node, ir.SampleNode)]
        backend = self.backends[members[0].component]
        options = backend.sampling_options(members[0], self.decoding)
        conditions = [condition(node, values) for values in runs for node in members]
        outputs = iter(backend.sample(conditions, self.generator, **options))
        for values in runs:
            for node in members:
                values[node.name] = next(outputs)
        return runs


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
    for k, row in enumerate(inputs):
        clashes(system, row, f"input row {k}")
    rows = [row for row in inputs for _ in range(n)]
    labels = [f"input row {k}" for k in range(len(inputs)) for _ in range(n)]
    given = Given(system, rows, labels, nodes="inputs", check=True)
    runs = interpret(system, Sample(backends, generator, decoding, inner=given), [{} for _ in rows])
    return [as_row(system, values) for values in runs]
