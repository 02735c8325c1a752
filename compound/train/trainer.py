"""`Trainer`: the SysDPO training loop over a declared system, on Accelerate.

One process or many (`accelerate launch`: DDP, FSDP, DeepSpeed). The loop's
collaborators each do one job: `Schedule` (which pairs and seeds each step
takes), `CandidateStore` (SysDPO-Sampling candidates), `Checkpointer` and
`MetricsLog` (the run folder), `step_metrics` (what a step logs), `Progress`.
A run folder holds `config.json`, `metrics.jsonl`, TensorBoard logs,
`checkpoints/` and `final/` (each trained component's weights or LoRA adapter,
loadable with `compound.load(SYSTEM, weights=RUN/final)`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compound.data import Pair, Preferences, load_preferences
from compound.devices import accelerated
from compound.diagnostics import CompoundError, Diagnostic, error, suggest
from compound.io import write_json
from compound.loader import load, load_weights, lora_options
from compound.loss import chosen_nll, plackett_luce_loss, rewards, scales, sysdpo_loss
from compound.progress import Mode, Progress
from compound.reference import ReferenceCache
from compound.run_folder import TrainRun, locked
from compound.system import CompiledSystem
from compound.text import Text
from compound.train.betas import auto_betas, by_node, given_betas
from compound.train.candidates import CandidateStore
from compound.train.checkpoint import Checkpointer, MetricsLog
from compound.train.config import TrainConfig, validated
from compound.train.metrics import step_metrics
from compound.train.ranking import Slot, adjacent, expand, gather
from compound.train.schedule import Schedule
from compound.types import LogRatio, Row, Sides, total
from compound.values import missing


class TrainingError(CompoundError):
    """The run cannot go on (repeated non-finite steps); its last good checkpoint is intact."""

    def __init__(self, message: str):
        super().__init__([Diagnostic("error", "training", message)])


@dataclass
class Scored:
    """A batch's system log ratios, and where each ranked list's outputs are in them (None: only pairs,
    each scored as itself)."""

    out: LogRatio
    slots: list[list[Slot]] | None = None


@dataclass
class Expanded:
    """The rows that score a batch: chosen and rejected rows, their seeds, the batch entry each came
    from, and each ranked list's slots (None: only pairs)."""

    chosen: list[Row]
    rejected: list[Row]
    seeds: torch.Tensor
    owner: list[int]
    slots: list[list[Slot]] | None


class Trainer:
    """SysDPO training of a `.cmp` system on preference data.

    trainer = compound.Trainer("storyboard.cmp", data="prefs.jsonl", out="runs/x", beta=0.1, steps=200)

    `weights` (a RUN/final folder) starts the policy from trained weights; the reference stays the
    base model the `.cmp` file names (online rounds: `compound.align`). `text` (params' values and
    demonstrations) is the text the system runs with; RUN/final/text.json keeps it beside the weights.
    trainer.train()
    trainer.evaluate(held_out_pairs)
    """

    def __init__(
        self,
        system: str | Path,
        data: str | Path | Preferences,
        out: str | Path,
        config: TrainConfig | Mapping[str, Any] | None = None,
        eval_data: str | Path | None = None,
        trust_remote_code: bool = False,
        weights: str | Path | None = None,
        text: Text | None = None,
        **overrides: Any,
    ):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        settings = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
        self.config = cfg = validated(TrainConfig, {**settings, **overrides})
        self.system_path, self.out = Path(system), Path(out)
        trackers = [t for t in cfg.report_to if t != "none"]
        self.accelerator = acc = Accelerator(
            cpu=not accelerated(),
            mixed_precision=cfg.mixed_precision,
            log_with=trackers or None,
            project_dir=str(self.out),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        self.system = load(
            self.system_path,
            reference=cfg.reference,
            options=lora_options(cfg.lora),
            trust_remote_code=trust_remote_code,
            text=text,
        )
        names = list(self.system.components)
        nodes = {f.node for f in self.system.system.factors}
        bases = {n.name: n.base for n in self.system.system.nodes if n.name in nodes}
        for node in [*cfg.node_weights, *cfg.node_betas]:
            if node not in nodes and node not in bases.values():
                hint = suggest(node, nodes)
                raise error(
                    "config",
                    f"node_weights or node_betas name '{node}', which is no sampled node of "
                    f"{self.system_path}"
                    + (
                        f"; did you mean '{hint}'?"
                        if hint
                        else f" (sampled nodes: {', '.join(sorted(nodes))})"
                    ),
                )
        unknown = (set(cfg.train or []) | set(cfg.learning_rates) | set(cfg.lora)) - set(names)
        if unknown:
            raise error(
                "config",
                f"no component named {', '.join(sorted(unknown))} in {self.system_path} "
                f"(components: {', '.join(names)})",
            )
        self.trained = list(cfg.train) if cfg.train else names
        self.frozen = [n for n in names if n not in self.trained]
        for name in self.frozen:
            self.system.backend(name).requires_grad_(False)
        ir_system = self.system.system
        self.data = (
            data if isinstance(data, Preferences) else load_preferences(ir_system, data, cfg.skip_invalid)
        )
        self.eval_data = load_preferences(ir_system, eval_data, cfg.skip_invalid) if eval_data else None
        if (
            any(p.rest for d in (self.data, self.eval_data) if d for p in d.pairs)
            and cfg.loss_type != "sigmoid"
        ):
            raise error(
                "config",
                "ranked lists train with the Plackett-Luce loss, the sigmoid loss's generalization: "
                "use loss_type='sigmoid' with them",
            )
        self.schedule = Schedule(
            len(self.data.pairs),
            cfg.batch_size,
            cfg.seed,
            acc.num_processes,
            acc.process_index,
            cfg.gradient_accumulation,
        )
        self.cache = self._reference_cache()  # of the base models: before `weights` move the policy
        if weights is not None:
            load_weights(self.system, weights)
            if text is not None:  # the text given wins over the one the weights were trained with
                self.system.set_text(text)
        self.node_weights = by_node(cfg.node_weights, bases)
        self.node_betas = given_betas(ir_system, by_node(cfg.node_betas, bases))
        if cfg.auto_beta:
            self.node_betas.update(self._auto_betas())
        if cfg.loss_type == "ipo" and self.node_betas:
            raise error(
                "config",
                "the ipo loss has one beta (its target margin is 1 / (2 beta)), but these nodes have their "
                f"own: {', '.join(sorted(self.node_betas))} (node_betas or the .cmp file's beta=); drop "
                "them, or use another loss",
            )
        groups = [
            {"params": params, "lr": cfg.learning_rates.get(name, cfg.learning_rate), "name": name}
            for name in self.trained
            if (params := [p for p in self.system.backend(name).parameters() if p.requires_grad])
        ]
        if not groups:
            raise error("config", "nothing to train: the chosen components have no trainable parameters")
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.global_batch = self.schedule.global_batch
        self.steps_per_epoch = self.schedule.steps_per_epoch
        self.total_steps = cfg.steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            cfg.schedule, self.optimizer, num_warmup_steps=cfg.warmup, num_training_steps=self.total_steps
        )
        # The scheduler stays unprepared: Accelerate would step it once per process, for data it assumes
        # sharded; here every process takes every global step.
        self.model, self.optimizer = acc.prepare(self.system, self.optimizer)
        self.candidates = CandidateStore(cfg.candidates, cfg.candidate_strategy, cfg.refresh_every, cfg.seed)
        self.checkpoints = Checkpointer(self.out, cfg.keep_checkpoints, acc)
        self.metrics_log = MetricsLog(self.out)
        self.sampling = sum(1 for p in self.data.pairs if missing(ir_system, p.chosen))
        self.step = 0
        self.bad_in_a_row = 0
        self.skipped = 0

    # ------------------------------------------------------------ data

    def _reference_cache(self) -> ReferenceCache | None:
        """Cached reference scores of the training (and evaluation) pairs, computed once next to the
        data and reused by later runs; keyed by the data's content and the components' weights."""
        fingerprints = self.system.reference_fingerprints()
        if not set(fingerprints) & set(self.trained):
            return None
        sets = [self.data] + ([self.eval_data] if self.eval_data else [])
        text = "".join(d.fingerprint() for d in sets) + "".join(
            fingerprints[n] for n in self.trained if n in fingerprints
        )
        key = hashlib.sha256(f"{text}{self.config.seed}".encode()).hexdigest()[:16]
        source = Path(self.data.source)
        where = source.with_name(source.name + ".reference") if source.exists() else self.out / "reference"
        path = where / f"{key}.safetensors"
        if self.accelerator.is_main_process and not path.exists():
            rows = self._expand([p for d in sets for p in d.pairs], 0)
            cache = self.system.reference_cache(rows.chosen, rows.rejected, seeds=rows.seeds)
            cache.save(path)
        self.accelerator.wait_for_everyone()
        cache = ReferenceCache.load(path)
        self.system.check_cache(cache)
        return cache

    def _auto_betas(self) -> dict[str, float]:
        """`auto_beta`: surrogate nodes' betas from the reference scores of the first global batch (the
        same on every process, and on a resumed run)."""
        first = [self.data.pairs[k] for k in self.schedule.first_batch()]
        rows = self._expand(first, 0)
        with torch.no_grad():
            scores = self.system.scores(
                rows.chosen, rows.rejected, seeds=rows.seeds, cache=self.cache, frozen=self.frozen
            )
        exact = {f.node for f in self.system.system.factors if self.system.backend(f.component).exact}
        return auto_betas(self.system.system, scores, exact, self.config.beta, self.node_betas)

    def _expand(self, pairs: Sequence[Pair], epoch: int) -> Expanded:
        """The rows to score for `pairs` and their draws' seeds: the pairs themselves, or, when some are
        ranked lists, every list's outputs paired up, all with the list's seeds (`compound.train.ranking`)."""
        seeds = self.schedule.seeds([p.row for p in pairs], epoch, len(self.system.system.factors))
        if not any(p.rest for p in pairs):
            chosen: list[Row] = [p.chosen for p in pairs]
            rejected: list[Row] = [p.rejected for p in pairs]
            return Expanded(chosen, rejected, seeds, list(range(len(pairs))), None)
        chosen, rejected, owner, slots = expand([p.ranked for p in pairs])
        return Expanded(chosen, rejected, seeds[owner], owner, slots)

    def batch(self, step: int, micro: int) -> list[Pair]:
        """This process's pairs of micro-batch `micro` of optimizer step `step`."""
        return [self.data.pairs[k] for k in self.schedule.batch(step, micro)]

    # ------------------------------------------------------------ steps

    def score(
        self, pairs: Sequence[Pair], epoch: int, model: torch.nn.Module | None = None, source: str = "train"
    ) -> Scored:
        """The system log ratios of `pairs` (or ranked lists), with the draws of `epoch` (SysDPO-Sampling
        pairs through their current candidates)."""
        system = self.accelerator.unwrap_model(self.model)
        assert isinstance(system, CompiledSystem)
        rows = self._expand(pairs, epoch)
        found = {
            k: self.candidates.get(system.system, system.backends, pairs[rows.owner[k]], source, self.step)
            for k, row in enumerate(rows.chosen)
            if missing(system.system, row)
        }
        out: LogRatio = (model or self.model)(
            rows.chosen,
            rows.rejected,
            seeds=rows.seeds,
            cache=self.cache,
            frozen=self.frozen,
            candidates=found,
        )
        return Scored(out, rows.slots)

    def log_ratio(
        self, pairs: Sequence[Pair], epoch: int, model: torch.nn.Module | None = None, source: str = "train"
    ) -> LogRatio:
        """The system log ratios of `pairs` (of ranked lists: of their outputs paired up, see `score`)."""
        return self.score(pairs, epoch, model, source).out

    def rewards(self, scored: Scored) -> tuple[Sides, dict[str, Sides]]:
        """The implicit rewards (beta_n times the weighted log ratios) of each pair's better and worse
        side, or of each ranked output and the one below it, in total and per node."""
        cfg = self.config
        out = scored.out
        totals = rewards(out, cfg.beta, self.node_weights, self.node_betas)
        scale = scales(out.per_node, cfg.beta, self.node_weights, self.node_betas)
        per_node = {n: (scale[n] * c, scale[n] * r) for n, (c, r) in out.per_node.items()}
        if scored.slots is None:
            return totals, per_node
        return adjacent(totals, scored.slots), {n: adjacent(v, scored.slots) for n, v in per_node.items()}

    def logps(self, scored: Scored) -> Sides | None:
        """The policy's log-probabilities of each pair's better and worse side (of a ranked list: each
        output and the one below it), its language-model nodes' summed; None when it has none."""
        out = scored.out
        exact = [n for n in out.policy if n in out.exact]
        if not exact:
            return None
        sides = (total(out.policy[n][0] for n in exact), total(out.policy[n][1] for n in exact))
        return sides if scored.slots is None else adjacent(sides, scored.slots)

    def loss(self, scored: Scored) -> torch.Tensor:
        cfg = self.config
        if scored.slots is not None:
            chosen, rejected = rewards(scored.out, cfg.beta, self.node_weights, self.node_betas)
            loss = plackett_luce_loss(*gather((chosen, rejected), scored.slots))
            if cfg.nll:  # on each list's best output: the chosen side of the list's first pair
                loss = loss + cfg.nll * chosen_nll(scored.out, [mine[0][0] for mine in scored.slots])
            return loss
        return sysdpo_loss(
            scored.out,
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            label_smoothing=cfg.label_smoothing,
            node_weights=self.node_weights,
            nll=cfg.nll,
            node_betas=self.node_betas,
        )

    def train_step(self) -> dict[str, float]:
        """One optimizer step over a global batch. A non-finite loss or gradient skips it; an update
        that makes a trained weight non-finite is rolled back (weights and optimizer state) and counted
        the same."""
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        torch.manual_seed(self.schedule.step_seed(self.step))  # dropout and the like
        epoch = self.schedule.epoch(self.step)
        outs: list[Scored] = []
        finite = True
        for micro in range(cfg.gradient_accumulation):
            last = micro == cfg.gradient_accumulation - 1
            with acc.no_sync(self.model) if not last else nullcontext(), acc.autocast():
                out = self.score(self.batch(self.step, micro), epoch)
                loss = self.loss(out) / cfg.gradient_accumulation
                finite &= bool(torch.isfinite(loss))
                if finite:
                    acc.backward(loss)
            outs.append(out)
        groups = self.optimizer.param_groups
        norms = {g["name"]: _norm(g["params"]) for g in groups}
        rates = {g["name"]: g["lr"] for g in groups}  # this step's, before the schedule moves
        finite &= all(math.isfinite(v) for v in norms.values())
        finite = self._everywhere(finite)
        if finite:
            params = [p for g in groups for p in g["params"]]
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            before = _Snapshot(params, self.optimizer) if cfg.rollback else None
            self.optimizer.step()
            finite = self._everywhere(all(bool(torch.isfinite(p).all()) for p in params))
            if not finite and before is not None:
                before.restore()
        if finite:
            self.scheduler.step()
            self.bad_in_a_row = 0
        else:
            self.skipped += 1
            self.bad_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self._metrics(outs)
        for name in norms:
            metrics[f"components/{name}/grad_norm"] = norms[name]
            metrics[f"components/{name}/lr"] = rates[name]
        metrics["pairs_per_second"] = self.global_batch / (time.perf_counter() - started)
        metrics["skipped"] = float(not finite)
        self.step += 1
        return metrics

    def _everywhere(self, ok: bool) -> bool:
        """Whether `ok` holds on every process."""
        acc = self.accelerator
        return bool(
            acc.reduce(torch.tensor(float(ok), device=acc.device), reduction="sum") == self.schedule.world
        )

    def _metrics(self, outs: Sequence[Scored]) -> dict[str, float]:
        """This step's metrics over the global batch: every process's rewards gathered."""
        acc = self.accelerator

        def gather_all(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            gathered: torch.Tensor = acc.gather(torch.cat([t.detach() for t in tensors]))
            return gathered

        with torch.no_grad():
            loss = acc.reduce(torch.stack([self.loss(o) for o in outs]).mean(), reduction="mean").item()
            found = [self.rewards(o) for o in outs]
            per_node = {
                node: (gather_all([f[1][node][0] for f in found]), gather_all([f[1][node][1] for f in found]))
                for node in found[0][1]
            }
            logps = [self.logps(o) for o in outs]
            both = [lp for lp in logps if lp is not None]
            gathered = (gather_all([b[0] for b in both]), gather_all([b[1] for b in both])) if both else None
            metrics = step_metrics(
                loss,
                gather_all([f[0][0] for f in found]),
                gather_all([f[0][1] for f in found]),
                per_node,
                gathered,
            )
        return {"step": self.step + 1, "epoch": self.step / self.steps_per_epoch, **metrics}

    # ------------------------------------------------------------ the run

    def train(self, resume: bool = False) -> dict[str, float]:
        """Run to `total_steps`; with `resume`, continue from the run folder's last checkpoint. The folder
        is locked while the run goes on, and one that holds a run already is refused without `resume`."""
        if not self.accelerator.is_main_process:
            return self._train(resume)
        if not resume and TrainRun(self.out).started():
            raise error("config", f"{self.out} holds a run already: --resume it, or choose another --out")
        with locked(self.out, "compound train"):
            return self._train(resume)

    def _train(self, resume: bool) -> dict[str, float]:
        acc, cfg = self.accelerator, self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._restore()
        elif acc.is_main_process:
            self.metrics_log.clear()
        if acc.is_main_process:
            run = {
                "system": str(self.system_path.resolve()),
                "data": self.data.source,
                **cfg.model_dump(),
                "betas": self.node_betas,  # every node's own beta, the .cmp file's and auto_beta's included
            }
            write_json(self.out / "config.json", run)
        acc.init_trackers("compound", config=_flat(cfg.model_dump()))
        last: dict[str, float] = {}
        mode: Mode = "silent" if not acc.is_main_process else "lines" if cfg.quiet else "bar"
        with Progress("training", self.total_steps, self.step, mode) as progress:
            while self.step < self.total_steps:
                last = self.train_step()
                if self.eval_data is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    last.update({f"eval_{k}": v for k, v in self.evaluate(self.eval_data.pairs).items()})
                if acc.is_main_process:
                    self.metrics_log.append(last)
                acc.log({k: v for k, v in last.items() if k != "step"}, step=self.step)
                progress.update(self.step, f"loss {last['loss']:.4f}  acc {last['rewards/accuracies']:.2f}")
                if self.bad_in_a_row >= cfg.nan_patience:
                    acc.end_training()
                    good = self.checkpoints.latest_good()
                    raise TrainingError(
                        f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient (up to step "
                        f"{self.step}); stopping. The last good checkpoint is "
                        f"{good or 'none (set save_every)'}; lower the learning rate or beta, and --resume."
                    )
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total_steps:
                    self.checkpoint()
        self.checkpoint()
        self.save_final()
        acc.end_training()
        return last

    def evaluate(self, pairs: Sequence[Pair]) -> dict[str, float]:
        """Preference accuracy and mean margin (the implicit rewards' gap), `rewards/accuracies` and
        `rewards/margins`, on held-out pairs (of ranked lists: over each output and the one ranked below
        it); logged during training as TRL logs them, `eval_rewards/accuracies`.

        With reference='cached', the pairs must be in the cache: pass them as `eval_data`.
        """
        model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            (better, worse), _ = self.rewards(self.score(pairs, 0, model, source="eval"))
        margin = better - worse
        return {
            "rewards/accuracies": (margin > 0).float().mean().item(),
            "rewards/margins": margin.mean().item(),
        }

    # ------------------------------------------------------------ saving

    def _training_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "scheduler": self.scheduler}

    def checkpoint(self) -> Path:
        """Write checkpoints/step-N atomically; keep the newest few."""
        state = {
            "step": self.step,
            "skipped": self.skipped,
            "bad_in_a_row": self.bad_in_a_row,
            "data": self.data.fingerprint(),
        }
        model = self.accelerator.unwrap_model(self.model)
        return self.checkpoints.save(
            self.step, model, self.trained, self._training_state(), state, self.candidates.state()
        )

    def _restore(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        state, candidates, passed = self.checkpoints.restore(
            model, self.trained, self._training_state(), self.data.fingerprint()
        )
        for problem in passed:
            print(f"--resume: passing over checkpoint {problem}", file=sys.stderr, flush=True)
        self.step, self.skipped, self.bad_in_a_row = state["step"], state["skipped"], state["bad_in_a_row"]
        self.candidates.restore(candidates)
        if self.accelerator.is_main_process:
            self.metrics_log.truncate(self.step)

    def save_final(self) -> Path:
        """RUN/final: each trained component's weights (or adapter), and what to load them into."""
        meta = {
            "system": str(self.system_path.resolve()),
            "trained": self.trained,
            "lora": self.config.lora,
            "step": self.step,
        }
        return self.checkpoints.save_final(self.accelerator.unwrap_model(self.model), self.trained, meta)


class _Snapshot:
    """Trained weights and optimizer state before an update, to put back if the update is not finite."""

    def __init__(self, params: Sequence[torch.Tensor], optimizer: Any):
        self.params = params
        self.values = [p.detach().clone() for p in params]
        self.optimizer = optimizer
        self.state = copy.deepcopy(optimizer.state_dict())

    def restore(self) -> None:
        with torch.no_grad():
            for p, value in zip(self.params, self.values, strict=True):
                p.copy_(value)
        self.optimizer.load_state_dict(self.state)


def _norm(params: Sequence[torch.Tensor]) -> float:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) if grads else 0.0


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in config.items()}
