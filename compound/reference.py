"""Reference scores computed once, for the `cached` reference strategy: the cache as data.

Before training, the policy is the reference, so its scores on the training
rows are the reference scores for the whole run: computed once
(`CompiledSystem.reference_cache`), saved next to the data, and read back each
step instead of running a reference model (no second copy of the weights, no
second forward pass). A cache is keyed by each row pair's content and by a
fingerprint of each component's reference weights; for diffusion factors it
keeps the seed of the (t, noise) draws, so that training scores the policy on
the very draws the reference was scored on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compound.diagnostics import error
from compound.io import atomic_file
from compound.types import Row, Scores, Sides


def row_key(chosen: Row, rejected: Row) -> str:
    """A content hash of one preference pair (images by path, or by pixels for PIL images)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in sorted(value.items())}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if hasattr(value, "tobytes") and hasattr(value, "mode"):
            return "pil:" + hashlib.sha256(value.tobytes() + f"{value.mode}{value.size}".encode()).hexdigest()
        return value if isinstance(value, str | int | float | bool) or value is None else str(value)

    text = json.dumps([plain(chosen), plain(rejected)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class ReferenceCache:
    """Reference scores per row pair and factor: chosen and rejected [rows, factors], and the seeds."""

    nodes: list[str]
    keys: list[str]
    chosen: torch.Tensor
    rejected: torch.Tensor
    seeds: torch.Tensor
    fingerprints: dict[str, str]

    @classmethod
    def of(
        cls,
        nodes: Sequence[str],
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        scores: Sequence[Scores],
        fingerprints: Mapping[str, str],
    ) -> ReferenceCache:
        """A cache of the rows' scores (`scores`: the reference's, batch after batch, as `Scores.policy`)."""

        def column(side: int) -> torch.Tensor:
            return (
                torch.cat([torch.stack([s.policy[n][side] for n in nodes], 1) for s in scores]).float().cpu()
            )

        return cls(
            nodes=list(nodes),
            keys=[row_key(c, r) for c, r in zip(chosen, rejected, strict=True)],
            chosen=column(0),
            rejected=column(1),
            seeds=torch.cat([s.seeds for s in scores]),
            fingerprints=dict(fingerprints),
        )

    def mismatched(self, fingerprints: Mapping[str, str]) -> list[str]:
        """The components whose reference weights differ from those the cache was computed with."""
        return [name for name, found in fingerprints.items() if self.fingerprints.get(name) != found]

    def lookup(
        self, chosen: Sequence[Row], rejected: Sequence[Row], columns: Mapping[int, str], seeds: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Sides]]:
        """The cached scores of these pairs for `columns` (factor position -> node), and `seeds`
        with those factors' cached seeds put in."""
        where = {key: k for k, key in enumerate(self.keys)}
        rows = []
        for k, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
            if (found := where.get(row_key(c, r))) is None:
                raise error(
                    "row",
                    f"pair {k} is not in the reference cache, which was computed for other data; "
                    "recompute it",
                )
            rows.append(found)
        index = torch.tensor(rows, dtype=torch.long)
        seeds = seeds.clone()
        scores = {}
        for f, node in columns.items():
            if node not in self.nodes:
                continue
            column = self.nodes.index(node)
            seeds[:, f] = self.seeds[index, column]
            scores[node] = (self.chosen[index, column], self.rejected[index, column])
        return seeds, scores

    def save(self, path: str | Path) -> Path:
        """Write the cache as one safetensors file, atomically."""
        from safetensors.torch import save_file

        meta = {
            "nodes": json.dumps(self.nodes),
            "keys": json.dumps(self.keys),
            "fingerprints": json.dumps(self.fingerprints),
        }
        with atomic_file(path) as tmp:
            save_file(
                {"chosen": self.chosen, "rejected": self.rejected, "seeds": self.seeds},
                str(tmp),
                metadata=meta,
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceCache:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in ("chosen", "rejected", "seeds")}
        return cls(
            nodes=json.loads(meta["nodes"]),
            keys=json.loads(meta["keys"]),
            fingerprints=json.loads(meta["fingerprints"]),
            **tensors,
        )
