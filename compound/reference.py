"""Reference scores computed once, for the `cached` reference strategy.

Before training, the policy is the reference, so its scores on the training
rows are the reference scores for the whole run: computed once here, saved next
to the data, and read back each step instead of running a reference model (no
second copy of the weights, no second forward pass). A cache is keyed by each
row pair's content and by a fingerprint of each component's weights; for
diffusion factors it keeps the seed of the (t, noise) draws, so that training
scores the policy on the very draws the reference was scored on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compound.diagnostics import CompoundError, Diagnostic

if TYPE_CHECKING:
    from compound.emit import CompiledSystem


def row_key(chosen: Mapping[str, Any], rejected: Mapping[str, Any]) -> str:
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
    def compute(
        cls,
        system: CompiledSystem,
        chosen: Sequence[Mapping[str, Any]],
        rejected: Sequence[Mapping[str, Any]],
        generator: torch.Generator | None = None,
        batch_size: int = 32,
        seeds: torch.Tensor | None = None,
    ) -> ReferenceCache:
        """Score every factor of every pair with the current (not yet trained) weights.

        The draws' seeds come from `generator`, or are given as `seeds` ([pairs, factors]).
        """
        parts = []
        with torch.no_grad():
            for start in range(0, len(chosen), batch_size):
                part = slice(start, start + batch_size)
                given = seeds[part] if seeds is not None else None
                parts.append(
                    system.scores(chosen[part], rejected[part], generator, reference=False, seeds=given)
                )
        nodes = [f.node for f in system.system.factors]
        return cls(
            nodes=nodes,
            keys=[row_key(c, r) for c, r in zip(chosen, rejected, strict=True)],
            chosen=torch.cat([torch.stack([p.policy[n][0] for n in nodes], 1) for p in parts]).float().cpu(),
            rejected=torch.cat([torch.stack([p.policy[n][1] for n in nodes], 1) for p in parts])
            .float()
            .cpu(),
            seeds=torch.cat([p.seeds for p in parts]),
            fingerprints={name: system.backend(name).fingerprint() for name in system.components},
        )

    def check(self, system: CompiledSystem) -> None:
        """Fail unless the cache was computed from these very weights."""
        for name in system.components:
            backend = system.backend(name)
            if (
                backend.reference_strategy == "cached"
                and self.fingerprints.get(name) != backend.fingerprint()
            ):
                raise backend.error(
                    "its weights differ from those the reference cache was computed with; "
                    "recompute the cache from the reference weights"
                )

    def lookup(
        self,
        system: CompiledSystem,
        chosen: Sequence[Mapping[str, Any]],
        rejected: Sequence[Mapping[str, Any]],
        seeds: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The cached reference scores of these pairs, and `seeds` with the cached factors' seeds put in."""
        where = {key: k for k, key in enumerate(self.keys)}
        rows = []
        for k, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
            if (found := where.get(row_key(c, r))) is None:
                raise CompoundError(
                    [
                        Diagnostic(
                            "error",
                            "row",
                            f"pair {k} is not in the reference cache, which "
                            "was computed for other data; recompute it",
                        )
                    ]
                )
            rows.append(found)
        index = torch.tensor(rows, dtype=torch.long)
        seeds = seeds.clone()
        scores = {}
        for f, factor in enumerate(system.system.factors):
            if (
                system.backend(factor.component).reference_strategy != "cached"
                or factor.node not in self.nodes
            ):
                continue
            column = self.nodes.index(factor.node)
            seeds[:, f] = self.seeds[index, column]
            scores[factor.node] = (self.chosen[index, column], self.rejected[index, column])
        return seeds, scores

    def save(self, path: str | Path) -> Path:
        """Write the cache as one safetensors file (atomically: a temporary file, then a rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "nodes": json.dumps(self.nodes),
            "keys": json.dumps(self.keys),
            "fingerprints": json.dumps(self.fingerprints),
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {"chosen": self.chosen, "rejected": self.rejected, "seeds": self.seeds}, str(tmp), metadata=meta
        )
        tmp.replace(path)
        return path

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
