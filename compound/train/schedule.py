"""Which pairs each process takes at each step, and the seeds of their random draws.

Each optimizer step takes a global batch of `batch_size x processes x
gradient_accumulation` pairs from a per-epoch permutation of the data; process
r takes its slice of each micro-batch, so any process count sees the same
global batches. Every draw is derived from (seed, epoch, pair, factor), not
from a running generator: a run resumed from a checkpoint, or split over more
processes, draws exactly what an uninterrupted single-process run draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from compound.seeds import splitmix


@dataclass(frozen=True)
class Schedule:
    """The batch and seed schedule of a run over `pairs` pairs."""

    pairs: int
    batch_size: int
    seed: int
    world: int = 1
    rank: int = 0
    accumulation: int = 1

    @property
    def global_batch(self) -> int:
        """Pairs per optimizer step, over every process and micro-batch."""
        return self.batch_size * self.world * self.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.pairs / self.global_batch)

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def batch(self, step: int, micro: int) -> list[int]:
        """The data positions of this process's micro-batch `micro` of optimizer step `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = torch.randperm(
            self.pairs, generator=torch.Generator().manual_seed(splitmix(self.seed, epoch))
        )
        start = position * self.global_batch + (micro * self.world + self.rank) * self.batch_size
        return [int(order[k % self.pairs]) for k in range(start, start + self.batch_size)]

    def first_batch(self) -> list[int]:
        """The data positions of the run's first global batch (every process's, every micro-batch)."""
        order = torch.randperm(self.pairs, generator=torch.Generator().manual_seed(splitmix(self.seed, 0)))
        return [int(order[k % self.pairs]) for k in range(self.global_batch)]

    def seeds(self, rows: Sequence[int], epoch: int, factors: int) -> torch.Tensor:
        """The draws' seeds of pairs (by their row numbers in the data) in an epoch: [pairs, factors]."""
        return torch.tensor([[splitmix(self.seed, epoch, row, f) for f in range(factors)] for row in rows])

    def step_seed(self, step: int) -> int:
        """This process's seed for step `step` (dropout and the like)."""
        return splitmix(self.seed, step, 1 + self.rank)
