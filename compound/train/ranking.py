"""Ranked lists of system outputs, scored through the pair machinery.

A list of N outputs of one input, best first, is scored as ceil(N / 2) pairs
(outputs 0 and 1, 2 and 3, ...; an odd last output is paired with itself) that
all take the list's seeds, so every output of a list sees the same diffusion
draws, as a pair's two outputs do. `slots` say where each output landed:
(pair, side) with side 0 the chosen and 1 the rejected row of that pair.
Imports nothing of the project but its types.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from compound.types import Row, Sides

#: Where one output of a list is scored: (pair, side).
Slot = tuple[int, int]


def expand(lists: Sequence[Sequence[Row]]) -> tuple[list[Row], list[Row], list[int], list[list[Slot]]]:
    """The pairs that score every output of `lists` once: chosen rows, rejected rows, the list each pair
    belongs to, and each list's slots, best first."""
    chosen: list[Row] = []
    rejected: list[Row] = []
    owner: list[int] = []
    slots: list[list[Slot]] = []
    for index, items in enumerate(lists):
        mine: list[Slot] = []
        for start in range(0, len(items), 2):
            pair = len(chosen)
            chosen.append(items[start])
            rejected.append(items[start + 1] if start + 1 < len(items) else items[start])
            owner.append(index)
            mine.append((pair, 0))
            if start + 1 < len(items):
                mine.append((pair, 1))
        slots.append(mine)
    return chosen, rejected, owner, slots


def gather(values: Sides, slots: Sequence[Sequence[Slot]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair (chosen, rejected) values laid out per list: [lists, longest] (zero padded), and each
    list's length."""
    sides = torch.stack(values, dim=1)  # [pairs, 2]
    longest = max(len(s) for s in slots)
    out = sides.new_zeros((len(slots), longest))
    for index, mine in enumerate(slots):
        pairs = torch.tensor([p for p, _ in mine], device=sides.device)
        side = torch.tensor([s for _, s in mine], device=sides.device)
        out[index, : len(mine)] = sides[pairs, side]
    return out, torch.tensor([len(s) for s in slots])


def adjacent(values: Sides, slots: Sequence[Sequence[Slot]]) -> Sides:
    """The values of every output and the output ranked just below it: (better, worse), one entry per
    consecutive pair of ranks (what a list's accuracy and margins are measured on)."""
    sides = torch.stack(values, dim=1)
    better = [mine[k] for mine in slots for k in range(len(mine) - 1)]
    worse = [mine[k + 1] for mine in slots for k in range(len(mine) - 1)]

    def pick(chosen: list[Slot]) -> torch.Tensor:
        pairs = torch.tensor([p for p, _ in chosen], dtype=torch.long, device=sides.device)
        side = torch.tensor([s for _, s in chosen], dtype=torch.long, device=sides.device)
        return sides[pairs, side]

    return pick(better), pick(worse)
