"""Emit a checked system as a PyTorch module: `compound.load` and `CompiledSystem`.

`CompiledSystem` holds one backend per component in an `nn.ModuleDict` (a
component that several nodes call is one module: shared parameters) and
evaluates the factorization:

    log_ratio(s | x) = sum over factors f of  weight_f * (score_policy(f) - score_reference(f))

Every factor that uses one component, for every row and both the chosen and the
rejected side, goes to that component in as few forward passes as its
`batch_size` allows. Random draws (diffusion timesteps and noise) come from one
seed per (row, factor), drawn from the caller's generator in a fixed order
before any batching, so batched and one-at-a-time evaluation agree and the same
generator gives the same numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compound import ir
from compound.backends import backend_class
from compound.compiler import compile_file
from compound.diagnostics import CompoundError, Diagnostic
from compound.marginal import marginal_log_ratio, missing
from compound.values import as_row, compute, condition, evaluate, given, plate_sizes, row_error

if TYPE_CHECKING:
    from compound.backends.base import Backend
    from compound.reference import ReferenceCache

Row = Mapping[str, Any]


@dataclass
class LogRatio:
    """System log ratios log p_theta(s|x) - log p_ref(s|x) of B chosen and B rejected rows.

    `per_node` breaks the totals down by node (weights applied); `policy` holds
    the policy's own scores (log-probabilities, or the diffusion surrogate), with
    gradients, for terms such as an NLL on the chosen side; `sizes` each node
    value's size (its tokens for a causal LM, 1 otherwise); `exact` the nodes
    whose score is an exact log-likelihood. Nodes of frozen components have a
    log ratio of zero and no policy scores.
    """

    chosen: torch.Tensor
    rejected: torch.Tensor
    per_node: dict[str, tuple[torch.Tensor, torch.Tensor]]
    policy: dict[str, tuple[torch.Tensor, torch.Tensor]]
    sizes: dict[str, tuple[torch.Tensor, torch.Tensor]]
    exact: frozenset[str]


@dataclass
class Scores:
    """Raw scores of every scored factor on both sides: policy (with gradients) and reference."""

    policy: dict[str, tuple[torch.Tensor, torch.Tensor]]
    reference: dict[str, tuple[torch.Tensor, torch.Tensor]]
    sizes: dict[str, tuple[torch.Tensor, torch.Tensor]]
    seeds: torch.Tensor  # [B, factors]


class CompiledSystem(nn.Module):
    """A compound system as one module: its components, `log_ratio` and `sample`."""

    def __init__(self, system: ir.System, components: Mapping[str, Backend]):
        super().__init__()
        self.system = system
        self.components = nn.ModuleDict(dict(components))

    def backend(self, name: str) -> Backend:
        return self.components[name]  # type: ignore[return-value]

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
        candidates: Mapping[int, Sequence[dict[str, Any]]] | None = None,
    ) -> LogRatio:
        """Score whole system outputs: chosen[k] and rejected[k] share their inputs.

        Pairs that give every sampled node are scored directly (SysDPO-Direct);
        pairs that lack intermediate nodes through the marginal over
        `candidates[k]`, assignments of their missing nodes
        (SysDPO-Sampling, `compound.marginal`). `seeds` ([pairs, factors])
        replaces the draws from `generator`; components named in `frozen` are not
        run for direct pairs: an unchanged model's log ratio is exactly zero.
        """
        _check_pairs(chosen, rejected)
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(chosen), len(self.system.factors)), generator=generator)
        sampled = [
            k
            for k, (c, r) in enumerate(zip(chosen, rejected, strict=True))
            if missing(self.system, c) or missing(self.system, r)
        ]
        if not sampled:
            return self._direct(chosen, rejected, cache, seeds, frozen)
        lacking = [k for k in sampled if not (candidates or {}).get(k)]
        if lacking:
            k = lacking[0]
            side, row = (
                ("chosen", chosen[k]) if missing(self.system, chosen[k]) else ("rejected", rejected[k])
            )
            raise row_error(
                f"{side} row {k}",
                missing(self.system, row)[0],
                "is missing (a sampled node of the "
                "system): give it, or candidates for SysDPO-Sampling (compound.marginal.candidates)",
            )
        if any(self.backend(c.name).reference_strategy == "cached" for c in self.system.components):
            raise CompoundError(
                [
                    Diagnostic(
                        "error",
                        "config",
                        "reference='cached' cannot serve SysDPO-Sampling "
                        "pairs: their candidates change as training goes; use 'adapter' or 'copy'",
                    )
                ]
            )
        direct = [k for k in range(len(chosen)) if k not in set(sampled)]
        parts = [
            marginal_log_ratio(
                self,
                [chosen[k] for k in sampled],
                [rejected[k] for k in sampled],
                [candidates[k] for k in sampled],
                seeds=seeds[sampled],
            )
        ]  # type: ignore[index]
        if direct:
            parts.insert(
                0,
                self._direct(
                    [chosen[k] for k in direct], [rejected[k] for k in direct], cache, seeds[direct], frozen
                ),
            )
        return _merge(parts, torch.tensor(direct + sampled).argsort())

    def _direct(
        self,
        chosen: Sequence[Row],
        rejected: Sequence[Row],
        cache: ReferenceCache | None,
        seeds: torch.Tensor,
        frozen: Collection[str],
    ) -> LogRatio:
        scores = self.scores(chosen, rejected, cache=cache, seeds=seeds, frozen=frozen)
        zero = torch.zeros(len(chosen), device=self._device())
        per_node = {}
        for factor in self.system.factors:
            if factor.node not in scores.policy:
                per_node[factor.node] = (zero, zero)
                continue
            (pc, pr), (rc, rr) = scores.policy[factor.node], scores.reference[factor.node]
            per_node[factor.node] = (factor.weight * (pc - rc), factor.weight * (pr - rr))
        sides = list(zip(*per_node.values(), strict=True)) or [(zero,), (zero,)]
        exact = {f.node for f in self.system.factors if self.backend(f.component).exact}
        return LogRatio(
            chosen=torch.stack(sides[0]).sum(0),
            rejected=torch.stack(sides[1]).sum(0),
            per_node=per_node,
            policy=scores.policy,
            sizes=scores.sizes,
            exact=frozenset(exact),
        )

    def _device(self) -> torch.device:
        return next(iter(self.parameters()), torch.zeros(0)).device

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
        """Policy and reference scores of every factor (the reference ones only if `reference`)."""
        _check_pairs(chosen, rejected)
        values = [self._pair(k, c, r) for k, (c, r) in enumerate(zip(chosen, rejected, strict=True))]
        factors = self.system.factors
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(chosen), len(factors)), generator=generator)
        cached_ref: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if cache is not None:
            seeds, cached_ref = cache.lookup(self, chosen, rejected, seeds)
        work = []  # per component: its backend, its factors' nodes, and their items and draws
        for name in self.components:
            if name in frozen:
                continue
            backend = self.backend(name)
            mine = [
                (f, self.system.node(factor.node))
                for f, factor in enumerate(factors)
                if factor.component == name
            ]
            items, draws = [], []
            for f, node in mine:
                for k, sides in enumerate(values):
                    for side in sides:
                        items.append(backend.prepare(condition(node, side), side[node.name], node.options))
                        draws.append(backend.draws(int(seeds[k, f]), items[-1]))
            if mine:
                work.append((backend, [node.name for _, node in mine], items, draws))
        # Every reference first: their activations are freed before the policy's graph is built.
        ref: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for backend, nodes, items, draws in work if reference else []:
            if backend.reference_strategy != "cached":
                ref.update(_by_node(backend.score(items, draws, reference=True), nodes, len(chosen)))
            elif missing := [node for node in nodes if node not in cached_ref]:
                raise backend.error(
                    f"reference='cached', but no reference cache was given for {', '.join(missing)}: "
                    "build one with compound.reference.ReferenceCache"
                )
            else:
                ref.update({node: cached_ref[node] for node in nodes})
        policy: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        sizes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for backend, nodes, items, draws in work:
            policy.update(_by_node(backend.score(items, draws), nodes, len(chosen)))
            sizes.update(
                _by_node(
                    torch.tensor([backend.size(i) for i in items], dtype=torch.float), nodes, len(chosen)
                )
            )
        return Scores(policy, ref, sizes, seeds)

    def _pair(self, k: int, chosen: Row, rejected: Row) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both sides' node values for pair k; their inputs must agree."""
        c = evaluate(self.system, chosen, f"chosen row {k}")
        r = evaluate(self.system, rejected, f"rejected row {k}")
        for node in self.system.nodes:
            if node.kind == "input" and c[node.name] != r[node.name]:
                raise row_error(
                    f"pair {k}",
                    node,
                    "differs between the chosen and the rejected row; a pair shares its inputs",
                )
        return c, r

    # ------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self, inputs: Sequence[Row], n: int = 1, generator: torch.Generator | None = None, **decoding: Any
    ) -> list[dict[str, Any]]:
        """Run the system forward n times per input row, in topological order, plates batched.

        Decoding options (`temperature`, `max_new_tokens`, `steps`,
        `guidance_scale`, ...) go to every component that knows them; a node's
        own options in the `.cmp` file come first, then the component's.
        Returns rows in the data-row format (images as PIL images).
        """
        generator = (
            generator
            if generator is not None
            else torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        )
        sizes = plate_sizes(self.system)
        runs: list[dict[str, Any]] = []
        for k, row in enumerate(inputs):
            start = {
                n.name: given(n, row, f"input row {k}", sizes) for n in self.system.nodes if n.kind == "input"
            }
            runs += [dict(start) for _ in range(n)]
        for declaration in _declarations(self.system):
            head = declaration[0]
            if head.kind == "input":
                continue
            if head.kind == "compute":
                for values in runs:
                    for node in declaration:
                        values[node.name] = compute(node, values)
                continue
            backend = self.backend(head.component)  # type: ignore[arg-type]
            options = {
                **_known(backend, self.backend_options(head.component)),  # type: ignore[arg-type]
                **_known(backend, head.options),
                **_known(backend, decoding),
            }
            conditions = [condition(node, values) for values in runs for node in declaration]
            outputs = iter(backend.sample(conditions, generator, **options))
            for values in runs:
                for node in declaration:
                    values[node.name] = next(outputs)
        return [as_row(self.system, values) for values in runs]

    def backend_options(self, component: str) -> dict[str, ir.Value]:
        return next(dict(c.options) for c in self.system.components if c.name == component)

    # ------------------------------------------------------------ saving

    def save_pretrained(self, path: str | Path) -> None:
        """Save each component's trained weights (or LoRA adapter) under path/COMPONENT.

        Each folder is written whole to a temporary folder and then renamed into
        place, so no stale file of an earlier save survives beside the new ones.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in self.components:
            fresh, final = path / f".{name}.tmp", path / name
            shutil.rmtree(fresh, ignore_errors=True)
            self.backend(name).save_pretrained(fresh)
            if final.exists():
                old = path / f".{name}.old"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                fresh.rename(final)
                shutil.rmtree(old)
            else:
                fresh.rename(final)


def _check_pairs(chosen: Sequence[Row], rejected: Sequence[Row]) -> None:
    if len(chosen) != len(rejected):
        message = f"{len(chosen)} chosen rows but {len(rejected)} rejected rows: they come in pairs"
        raise CompoundError([Diagnostic("error", "row", message)])


def _merge(parts: Sequence[LogRatio], order: torch.Tensor) -> LogRatio:
    """Log ratios of disjoint groups of pairs, put back in the pairs' order."""

    def cat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(tensors))[order.to(tensors[0].device)]

    def both(field: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        nodes = [n for n in getattr(parts[0], field) if all(n in getattr(p, field) for p in parts)]
        return {
            n: (cat([getattr(p, field)[n][0] for p in parts]), cat([getattr(p, field)[n][1] for p in parts]))
            for n in nodes
        }

    return LogRatio(
        chosen=cat([p.chosen for p in parts]),
        rejected=cat([p.rejected for p in parts]),
        per_node=both("per_node"),
        policy=both("policy"),
        sizes=both("sizes"),
        exact=parts[0].exact,
    )


def _by_node(
    scores: torch.Tensor, nodes: list[str], pairs: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Scores laid out node-major, then pair, then side (chosen, rejected), split per node."""
    grid = scores.view(len(nodes), pairs, 2)
    return {node: (grid[j, :, 0], grid[j, :, 1]) for j, node in enumerate(nodes)}


def _declarations(system: ir.System) -> list[list[ir.Node]]:
    """Nodes grouped by declaration (a plate's members together), in topological order."""
    groups: dict[str, list[ir.Node]] = {}
    for node in system.nodes:
        groups.setdefault(node.base, []).append(node)
    return list(groups.values())


def _known(backend: Backend, options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in backend.sampling}


def load(
    path: str | Path,
    weights: str | Path | None = None,
    reference: str | Mapping[str, str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> CompiledSystem:
    """Compile a `.cmp` file and load its components with `from_pretrained`.

    Model folders are relative to the `.cmp` file. `weights` is a folder written
    by `save_pretrained` (one subfolder per component; components without one
    keep their base weights). `reference` overrides the reference strategy
    (`copy`, `adapter`, `cached`), for every component or per component name.
    `options` adds or overrides component options, per component name: a dict
    value becomes a call, so `{"writer": {"lora": {"r": 8}}}` means `lora(r=8)`.
    """
    path = Path(path)
    system = compile_file(path)
    weights = Path(weights) if weights is not None else None
    if weights is not None and not weights.is_dir():
        raise CompoundError([Diagnostic("error", "component", f"no trained weights at {weights}")])
    components = {}
    for component in system.components:
        extra = (options or {}).get(component.name, {})
        if extra:
            merged = {**component.options, **{k: _value(k, v) for k, v in extra.items()}}
            component = component.model_copy(update={"options": merged})
        strategy = reference.get(component.name) if isinstance(reference, Mapping) else reference
        trained = weights / component.name if weights is not None else None
        if trained is not None and not trained.is_dir():
            trained = None
        components[component.name] = backend_class(component.kind).load(
            component, path.parent, trained, strategy
        )
    return CompiledSystem(system, components)


def _value(name: str, value: Any) -> ir.Value:
    return ir.Call(name=name, options=dict(value)) if isinstance(value, Mapping) else value
