"""SysDPO-Sampling's candidates during training: made from the current policy, renewed as it moves.

A pair that leaves intermediate nodes out trains through the marginal over
candidate values of them (`compound.estimators.marginal`); the store keeps each
pair's candidates and makes new ones after `refresh_every` steps, with a
generator seeded by (seed, step, row), so a resumed run makes the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from compound import ir
from compound.backends.base import Backend
from compound.data import Pair
from compound.interpret.candidates import candidates
from compound.seeds import splitmix
from compound.types import Assignment


class CandidateStore:
    """Each SysDPO-Sampling pair's candidates, by "source:row", with the step they were made at."""

    def __init__(self, k: int, strategy: str, refresh_every: int, seed: int):
        self.k, self.strategy, self.refresh_every, self.seed = k, strategy, refresh_every, seed
        self.found: dict[str, tuple[int, list[Assignment]]] = {}

    def get(
        self, system: ir.System, backends: Mapping[str, Backend], pair: Pair, source: str, step: int
    ) -> list[Assignment]:
        """The pair's candidates at `step`, made anew when they are `refresh_every` steps old."""
        key = f"{source}:{pair.row}"
        made = self.found.get(key)
        if made is not None and step - made[0] < self.refresh_every:
            return made[1]
        generator = torch.Generator().manual_seed(splitmix(self.seed, step, pair.row, 0xCA))
        with torch.no_grad():
            found = candidates(
                system, backends, pair.chosen, self.k, self.strategy, generator, label=f"row {pair.row}"
            )
        self.found[key] = (step, found)
        return found

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the store."""
        return dict(self.found)

    def restore(self, state: Mapping[str, Any]) -> None:
        self.found = {key: (int(value[0]), list(value[1])) for key, value in state.items()}
