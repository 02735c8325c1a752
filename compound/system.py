"""`CompiledSystem`: a checked system and its components as one PyTorch module.

It holds one backend per component in an `nn.ModuleDict` (a component that
several nodes call is one module: shared parameters) and wires the run-time
stages together: `log_ratio` sends each pair to its estimator (SysDPO-Direct
for pairs that give every sampled node, SysDPO-Sampling for pairs that leave
intermediates out), `scores` gives the raw per-factor scores, `sample` runs the
system forward, `reference_cache` precomputes the `cached` references, and
`trace` records what every node did, and `save_pretrained` writes what training changed. Each of
them is one walk of the graph (`compound.interpret`) with its handlers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compound import ir
from compound.backends.base import Backend
from compound.diagnostics import error
from compound.estimators import direct, marginal
from compound.interpret.sample import sample
from compound.interpret.score import check_pairs, draw_seeds, score
from compound.interpret.trace import RunTrace, trace
from compound.io import atomic_folder
from compound.reference import ReferenceCache
from compound.text import Text, bind, current
from compound.types import Assignment, LogRatio, Row, Scores, Sides, merge
from compound.values import missing, row_error


class CompiledSystem(nn.Module):
    """A compound system as one module: its components, `log_ratio` and `sample`."""

    def __init__(self, system: ir.System, components: Mapping[str, Backend]):
        super().__init__()
        self.system = system
        self.components = nn.ModuleDict(dict(components))

    def backend(self, name: str) -> Backend:
        """The backend of the component called `name`."""
        found = self.components[name]
        assert isinstance(found, Backend)
        return found

    @property
    def backends(self) -> dict[str, Backend]:
        """Every component's backend, in the order the `.cmp` file declares them."""
        return {name: self.backend(name) for name in self.components}

    # ------------------------------------------------------------ scoring

    def forward(self, *args: Any, **kwargs: Any) -> LogRatio:
        """`log_ratio`, so that wrappers such as DistributedDataParallel see the computation."""
        return self.log_ratio(*args, **kwargs)

    def log_ratio(
        self,
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        generator: torch.Generator | None = None,
        cache: ReferenceCache | None = None,
        seeds: torch.Tensor | None = None,
        frozen: Collection[str] = (),
        candidates: Mapping[int, Sequence[Assignment]] | None = None,
    ) -> LogRatio:
        """Score whole system outputs: chosen[k] and rejected[k] share their inputs.

        Pairs that give every sampled node are scored directly (SysDPO-Direct);
        pairs that lack intermediate nodes through the marginal over
        `candidates[k]`, assignments of their missing nodes (SysDPO-Sampling,
        `compound.interpret.candidates.candidates`). `seeds` ([pairs, factors])
        replaces the draws from `generator`; components named in `frozen` are
        not run for direct pairs: an unchanged model's log ratio is exactly zero.
        """
        check_pairs(chosen, rejected)
        if seeds is None:
            seeds = draw_seeds(len(chosen), len(self.system.factors), generator)
        sampled = [
            k
            for k, (c, r) in enumerate(zip(chosen, rejected, strict=True))
            if missing(self.system, c) or missing(self.system, r)
        ]
        if not sampled:
            return self._direct(chosen, rejected, cache, seeds, frozen)
        found = candidates or {}
        lacking = [k for k in sampled if not found.get(k)]
        if lacking:
            k = lacking[0]
            side, row = (
                ("chosen", chosen[k]) if missing(self.system, chosen[k]) else ("rejected", rejected[k])
            )
            raise row_error(
                f"{side} row {k}",
                missing(self.system, row)[0],
                "is missing (a sampled node of the system): give it, or candidates for SysDPO-Sampling "
                "(compound.interpret.candidates.candidates)",
            )
        if any(b.reference_strategy == "cached" for b in self.backends.values()):
            raise error(
                "config",
                "reference='cached' cannot serve SysDPO-Sampling pairs: their candidates change as training "
                "goes; use 'adapter' or 'copy'",
            )
        direct_pairs = [k for k in range(len(chosen)) if k not in set(sampled)]
        parts = [
            marginal.log_ratio(
                self.system,
                self.backends,
                [chosen[k] for k in sampled],
                [rejected[k] for k in sampled],
                [found[k] for k in sampled],
                seeds=seeds[sampled],
            )
        ]
        if direct_pairs:
            kept_c, kept_r = [chosen[k] for k in direct_pairs], [rejected[k] for k in direct_pairs]
            parts.insert(0, self._direct(kept_c, kept_r, cache, seeds[direct_pairs], frozen))
        return merge(parts, torch.tensor(direct_pairs + sampled).argsort())

    def _direct(
        self,
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        cache: ReferenceCache | None,
        seeds: torch.Tensor,
        frozen: Collection[str],
    ) -> LogRatio:
        seeds, cached = self._lookup(chosen, rejected, cache, seeds)
        return direct.log_ratio(self.system, self.backends, chosen, rejected, seeds, cached, frozen)

    def _lookup(
        self,
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        cache: ReferenceCache | None,
        seeds: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, Sides]]:
        """The cached reference scores of these pairs' `cached` factors, and the seeds they were drawn
        with."""
        if cache is None:
            return seeds, {}
        columns = {
            f: factor.node
            for f, factor in enumerate(self.system.factors)
            if self.backend(factor.component).reference_strategy == "cached"
        }
        return cache.lookup(chosen, rejected, columns, seeds)

    def scores(
        self,
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        generator: torch.Generator | None = None,
        cache: ReferenceCache | None = None,
        reference: bool = True,
        seeds: torch.Tensor | None = None,
        frozen: Collection[str] = (),
    ) -> Scores:
        """Policy and reference scores of every factor of complete pairs (the reference ones only if
        `reference`)."""
        check_pairs(chosen, rejected)
        if seeds is None:
            seeds = draw_seeds(len(chosen), len(self.system.factors), generator)
        seeds, cached = self._lookup(chosen, rejected, cache, seeds)
        return score(self.system, self.backends, chosen, rejected, seeds, reference, cached, frozen)

    def trace(
        self,
        rows: Sequence[Row],
        generator: torch.Generator | None = None,
        seeds: torch.Tensor | None = None,
        reference: bool = True,
        scores: bool = True,
    ) -> list[RunTrace]:
        """Every node of each complete row (a sampled one, say): its parents' values, its prompt, its
        value, and each factor's policy and reference scores and weighted log ratio
        (`compound.interpret.trace`; `scores=False`: no model runs, the rest only); `seeds` ([rows,
        factors]) replaces the draws from `generator`."""
        if seeds is None:
            seeds = draw_seeds(len(rows), len(self.system.factors), generator)
        return trace(self.system, self.backends, rows, seeds, reference, scores=scores)

    # ------------------------------------------------------------ text parameters

    @property
    def text(self) -> Text:
        """The params' values and the nodes' demonstrations the system runs with now."""
        return current(self.system)

    def set_text(self, text: Text) -> None:
        """Run with `text` (`compound.text.bind`): params not in it keep their value, nodes not in its
        demonstrations keep theirs; the weights do not change."""
        self.system = bind(self.system, text)
        for p in self.system.params:
            for use in p.uses:
                if use.kind == "component":
                    backend = self.backend(use.owner)
                    options = {**backend.component.options, use.option: p.value}
                    backend.component = backend.component.model_copy(update={"options": options})

    # ------------------------------------------------------------ the cached reference

    def reference_fingerprints(self) -> dict[str, str]:
        """The reference weights' fingerprint of each `cached`-reference component."""
        return {
            name: b.reference_fingerprint
            for name, b in self.backends.items()
            if b.reference_strategy == "cached"
        }

    def reference_cache(
        self,
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        generator: torch.Generator | None = None,
        batch_size: int = 32,
        seeds: torch.Tensor | None = None,
    ) -> ReferenceCache:
        """Score every factor of every pair with the reference weights (the base models: compute it
        before training). The draws' seeds come from `generator`, or are given as `seeds`
        ([pairs, factors])."""
        for backend in self.backends.values():
            if (
                backend.reference_strategy == "cached"
                and backend.fingerprint() != backend.reference_fingerprint
            ):
                raise backend.error(
                    "reference='cached' scores the base model the .cmp file names, but these weights were "
                    "trained or changed since loading: compute the cache from a system loaded "
                    "without weights="
                )
        check_pairs(chosen, rejected)
        if seeds is None:
            seeds = draw_seeds(len(chosen), len(self.system.factors), generator)
        parts = []
        with torch.no_grad():
            for start in range(0, len(chosen), batch_size):
                part = slice(start, start + batch_size)
                parts.append(
                    score(
                        self.system, self.backends, chosen[part], rejected[part], seeds[part], reference=False
                    )
                )
        nodes = [f.node for f in self.system.factors]
        return ReferenceCache.of(nodes, chosen, rejected, parts, self.reference_fingerprints())

    def check_cache(self, cache: ReferenceCache) -> None:
        """Fail unless the cache was computed from these components' reference weights."""
        for name in cache.mismatched(self.reference_fingerprints()):
            raise self.backend(name).error(
                "its reference weights differ from those the reference cache was computed with; "
                "recompute the cache from the reference weights"
            )

    # ------------------------------------------------------------ sampling and saving

    def sample(
        self, inputs: Sequence[Row], n: int = 1, generator: torch.Generator | None = None, **decoding: Any
    ) -> list[dict[str, Any]]:
        """Run the system forward n times per input row (`compound.interpret.sample.sample`)."""
        return sample(self.system, self.backends, inputs, n, generator, **decoding)

    def save_pretrained(self, path: str | Path, only: Collection[str] | None = None) -> None:
        """Save each component's trained weights (or LoRA adapter) under path/COMPONENT (`only`: these
        components), each folder written whole and then renamed into place."""
        for name, backend in self.backends.items():
            if only is None or name in only:
                with atomic_folder(Path(path) / name) as folder:
                    backend.save_pretrained(folder)
