"""Train every trainable component of a declared system jointly with SysDPO, on Accelerate.

One process or many (`accelerate launch`: DDP, FSDP, DeepSpeed): each optimizer
step takes a global batch of `batch_size x processes x gradient_accumulation`
pairs from a per-epoch permutation of the data; process r takes its slice of
each micro-batch, so any process count sees the same global batches. Every
random draw is derived from (seed, epoch, pair, factor) or (seed, step), not
from a running generator: a run resumed from a checkpoint, or split over more
processes, draws exactly what an uninterrupted single-process run draws.

A run folder holds `config.json`, `metrics.jsonl` (one line per step),
TensorBoard logs, `checkpoints/step-NNNNNN/` (written to a temporary folder and
renamed: a crash never leaves half a checkpoint) and `final/` (each trained
component's weights or LoRA adapter, loadable with
`compound.load(SYSTEM, weights=RUN/final)`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from compound import marginal
from compound.data import Pair, Preferences, load_preferences
from compound.diagnostics import CompoundError, Diagnostic
from compound.emit import LogRatio, load
from compound.loss import sysdpo_loss
from compound.marginal import missing
from compound.reference import ReferenceCache

RUN_FILE = "compound.json"


class TrainConfig(BaseModel):
    """Everything a run is configured by (a TOML or YAML file, flags, or keyword arguments)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    nll: float = Field(0.0, ge=0, description="weight of the chosen side's NLL (RPO); 0: none")
    node_weights: dict[str, float] = {}
    learning_rate: float = Field(1e-4, gt=0)
    learning_rates: dict[str, float] = Field({}, description="per component, overriding learning_rate")
    weight_decay: float = 0.0
    batch_size: int = Field(8, ge=1, description="pairs per process per micro-batch")
    gradient_accumulation: int = Field(1, ge=1)
    steps: int | None = Field(None, ge=1, description="optimizer steps; default: epochs over the data")
    epochs: float = Field(1.0, gt=0)
    warmup: int = Field(0, ge=0, description="warm-up steps")
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    reference: str | dict[str, str] | None = None
    lora: dict[str, dict[str, Any]] = Field({}, description="per component: lora options such as {r = 8}")
    train: list[str] | None = Field(None, description="components to train; default: all")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps; 0: only at the end")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    eval_every: int = Field(0, ge=0)
    nan_patience: int = Field(5, ge=1, description="stop after this many non-finite steps in a row")
    candidates: int = Field(4, ge=1, description="SysDPO-Sampling: candidates per left-out intermediate")
    candidate_strategy: Literal["beam", "sample"] = "beam"
    refresh_every: int = Field(
        50, ge=1, description="SysDPO-Sampling: regenerate a pair's candidates after N steps"
    )
    skip_invalid: bool = False
    report_to: list[str] = ["tensorboard"]
    quiet: bool = False


class TrainingError(RuntimeError):
    """The run cannot go on (repeated non-finite steps); its last good checkpoint is intact."""


def read_config(path: str | Path) -> dict[str, Any]:
    """A TOML or YAML config file as a dict (keys are TrainConfig's fields)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        import tomllib

        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    raise CompoundError([Diagnostic("error", "config", f"{path}: use a .toml or .yaml config file")])


def splitmix(*values: int) -> int:
    """A well-mixed 62-bit seed from integers (SplitMix64 steps): draws keyed by what they are for."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x >> 2


class Trainer:
    """SysDPO training of a `.cmp` system on preference data.

    trainer = compound.Trainer("storyboard.cmp", data="prefs.jsonl", out="runs/x", beta=0.1, steps=200)
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
        **overrides: Any,
    ):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        settings = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
        self.config = TrainConfig(**{**settings, **overrides})
        self.system_path, self.out = Path(system), Path(out)
        cfg = self.config
        trackers = [t for t in cfg.report_to if t != "none"]
        self.accelerator = Accelerator(
            cpu=not _accelerated(),  # else processes launched on a CPU-only machine do not see each other
            mixed_precision=cfg.mixed_precision,
            log_with=trackers or None,
            project_dir=str(self.out),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        options = {name: {"lora": spec} for name, spec in cfg.lora.items()}
        self.system = load(self.system_path, reference=cfg.reference, options=options)
        names = list(self.system.components)
        unknown = set(cfg.train or []) | set(cfg.learning_rates) | set(cfg.lora)
        if unknown - set(names):
            raise CompoundError(
                [
                    Diagnostic(
                        "error",
                        "config",
                        f"no component named {', '.join(sorted(unknown - set(names)))}"
                        f" in {self.system_path} (components: {', '.join(names)})",
                    )
                ]
            )
        self.trained = list(cfg.train) if cfg.train else names
        self.frozen = [n for n in names if n not in self.trained]
        for name in self.frozen:
            self.system.backend(name).requires_grad_(False)
        self.data = (
            data
            if isinstance(data, Preferences)
            else load_preferences(self.system.system, data, cfg.skip_invalid)
        )
        self.eval_data = (
            load_preferences(self.system.system, eval_data, cfg.skip_invalid) if eval_data else None
        )
        self.cache = self._reference_cache()
        groups = []
        for name in self.trained:
            params = [p for p in self.system.backend(name).parameters() if p.requires_grad]
            if params:
                groups.append(
                    {"params": params, "lr": cfg.learning_rates.get(name, cfg.learning_rate), "name": name}
                )
        if not groups:
            raise CompoundError(
                [
                    Diagnostic(
                        "error",
                        "config",
                        "nothing to train: the chosen components have no trainable parameters",
                    )
                ]
            )
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.world = self.accelerator.num_processes
        self.global_batch = cfg.batch_size * self.world * cfg.gradient_accumulation
        self.steps_per_epoch = math.ceil(len(self.data.pairs) / self.global_batch)
        self.total_steps = cfg.steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        from transformers import get_scheduler

        self.scheduler = get_scheduler(
            cfg.schedule, self.optimizer, num_warmup_steps=cfg.warmup, num_training_steps=self.total_steps
        )
        # The scheduler stays unprepared: Accelerate would step it once per process, for data it assumes
        # sharded; here every process takes every global step.
        self.model, self.optimizer = self.accelerator.prepare(self.system, self.optimizer)
        self.store: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # SysDPO-Sampling candidates by pair
        self.sampling = sum(1 for p in self.data.pairs if missing(self.system.system, p.chosen))
        self.step = 0
        self.bad_in_a_row = 0
        self.skipped = 0

    # ------------------------------------------------------------ data

    def _reference_cache(self) -> ReferenceCache | None:
        """Cached reference scores of the training (and evaluation) pairs, computed once next to the
        data and reused by later runs; keyed by the data's content and the components' weights."""
        cached = [n for n in self.trained if self.system.backend(n).reference_strategy == "cached"]
        if not cached:
            return None
        sets = [self.data] + ([self.eval_data] if self.eval_data else [])
        text = "".join(d.fingerprint() for d in sets) + "".join(
            self.system.backend(n).fingerprint() for n in cached
        )
        key = hashlib.sha256(f"{text}{self.config.seed}".encode()).hexdigest()[:16]
        where = (
            Path(self.data.source + ".reference")
            if Path(self.data.source).exists()
            else self.out / "reference"
        )
        path = where / f"{key}.safetensors"
        if self.accelerator.is_main_process and not path.exists():
            pairs = [p for d in sets for p in d.pairs]
            cache = ReferenceCache.compute(
                self.system,
                [p.chosen for p in pairs],
                [p.rejected for p in pairs],
                seeds=self.seeds(pairs, 0),
            )
            cache.save(path)
        self.accelerator.wait_for_everyone()
        cache = ReferenceCache.load(path)
        cache.check(self.system)
        return cache

    def batch(self, step: int, micro: int) -> list[Pair]:
        """This process's pairs of micro-batch `micro` of optimizer step `step`."""
        n = len(self.data.pairs)
        epoch, position = divmod(step, self.steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(splitmix(self.config.seed, epoch)))
        start = (
            position * self.global_batch
            + (micro * self.world + self.accelerator.process_index) * self.config.batch_size
        )
        return [self.data.pairs[int(order[k % n])] for k in range(start, start + self.config.batch_size)]

    def seeds(self, pairs: Sequence[Pair], epoch: int) -> torch.Tensor:
        factors = len(self.system.system.factors)
        return torch.tensor(
            [[splitmix(self.config.seed, epoch, p.row, f) for f in range(factors)] for p in pairs]
        )

    # ------------------------------------------------------------ steps

    def log_ratio(
        self, pairs: Sequence[Pair], epoch: int, model: torch.nn.Module | None = None, source: str = "train"
    ) -> LogRatio:
        found = {
            k: self.candidates(p, source)
            for k, p in enumerate(pairs)
            if missing(self.system.system, p.chosen)
        }
        return (model or self.model)(
            [p.chosen for p in pairs],
            [p.rejected for p in pairs],
            seeds=self.seeds(pairs, epoch),
            cache=self.cache,
            frozen=self.frozen,
            candidates=found,
        )

    def candidates(self, pair: Pair, source: str) -> list[dict[str, Any]]:
        """A SysDPO-Sampling pair's candidates from the current policy, renewed each `refresh_every` steps."""
        key = f"{source}:{pair.row}"
        made, found = self.store.get(key, (None, None))
        if made is None or self.step - made >= self.config.refresh_every:
            generator = torch.Generator().manual_seed(splitmix(self.config.seed, self.step, pair.row, 0xCA))
            model = self.accelerator.unwrap_model(self.model)
            with torch.no_grad():
                found = marginal.candidates(
                    model,
                    pair.chosen,
                    self.config.candidates,
                    self.config.candidate_strategy,
                    generator,
                    label=f"row {pair.row}",
                )
            self.store[key] = (self.step, found)
        return found

    def loss(self, out: LogRatio) -> torch.Tensor:
        cfg = self.config
        return sysdpo_loss(
            out,
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            label_smoothing=cfg.label_smoothing,
            node_weights=cfg.node_weights,
            nll=cfg.nll,
        )

    def train_step(self) -> dict[str, float]:
        """One optimizer step over a global batch; a non-finite loss or gradient skips it."""
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        torch.manual_seed(splitmix(cfg.seed, self.step, 1 + acc.process_index))  # dropout and the like
        epoch = self.step // self.steps_per_epoch
        outs: list[LogRatio] = []
        finite = True
        for micro in range(cfg.gradient_accumulation):
            last = micro == cfg.gradient_accumulation - 1
            with acc.no_sync(self.model) if not last else nullcontext(), acc.autocast():
                out = self.log_ratio(self.batch(self.step, micro), epoch)
                loss = self.loss(out) / cfg.gradient_accumulation
                finite &= bool(torch.isfinite(loss))
                if finite:
                    acc.backward(loss)
            outs.append(out)
        norms = {g["name"]: _norm(g["params"]) for g in self.optimizer.param_groups}
        rates = {
            g["name"]: g["lr"] for g in self.optimizer.param_groups
        }  # this step's, before the schedule moves
        finite &= all(math.isfinite(v) for v in norms.values())
        finite = bool(
            acc.reduce(torch.tensor(float(finite), device=acc.device), reduction="sum") == self.world
        )
        if finite:
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
                )
            self.optimizer.step()
            self.scheduler.step()
            self.bad_in_a_row = 0
        else:
            self.skipped += 1
            self.bad_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.metrics(outs, norms, rates, time.perf_counter() - started)
        metrics["skipped"] = float(not finite)
        self.step += 1
        return metrics

    def metrics(
        self, outs: Sequence[LogRatio], norms: Mapping[str, float], rates: Mapping[str, float], seconds: float
    ) -> dict[str, float]:
        """Loss, rewards, margins and accuracies of the system and of each node, over the global batch."""
        cfg, acc = self.config, self.accelerator
        with torch.no_grad():
            losses = torch.stack([self.loss(o) for o in outs])
            chosen = acc.gather(torch.cat([o.chosen.detach() for o in outs])) * cfg.beta
            rejected = acc.gather(torch.cat([o.rejected.detach() for o in outs])) * cfg.beta
            margin = chosen - rejected
            m: dict[str, float] = {
                "step": self.step + 1,
                "epoch": self.step / self.steps_per_epoch,
                "loss": acc.reduce(losses.mean(), reduction="mean").item(),
                "rewards/chosen": chosen.mean().item(),
                "rewards/rejected": rejected.mean().item(),
                "rewards/margin": margin.mean().item(),
                "rewards/accuracy": (margin > 0).float().mean().item(),
            }
            node_margins = {}
            for node in outs[0].per_node:
                c = acc.gather(torch.cat([o.per_node[node][0].detach() for o in outs])) * cfg.beta
                r = acc.gather(torch.cat([o.per_node[node][1].detach() for o in outs])) * cfg.beta
                node_margins[node] = (c - r).mean().item()
                m[f"nodes/{node}/margin"] = node_margins[node]
                m[f"nodes/{node}/accuracy"] = ((c - r) > 0).float().mean().item()
            scale = sum(abs(v) for v in node_margins.values()) or 1.0
            m.update({f"nodes/{node}/share": v / scale for node, v in node_margins.items()})
            for name in norms:
                m[f"components/{name}/grad_norm"] = norms[name]
                m[f"components/{name}/lr"] = rates[name]
        m["pairs_per_second"] = self.global_batch / seconds
        return m

    # ------------------------------------------------------------ the run

    def train(self, resume: bool = False) -> dict[str, float]:
        """Run to `total_steps`; with `resume`, continue from the run folder's last checkpoint."""
        acc, cfg = self.accelerator, self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._restore()
        elif acc.is_main_process:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if acc.is_main_process:
            self._write_json(
                self.out / "config.json",
                {"system": str(self.system_path.resolve()), "data": self.data.source, **cfg.model_dump()},
            )
        acc.init_trackers("compound", config=_flat(cfg.model_dump()))
        last: dict[str, float] = {}
        mode = "silent" if not acc.is_main_process else "lines" if cfg.quiet else "bar"
        with _Progress(self.total_steps, self.step, mode) as progress:
            while self.step < self.total_steps:
                last = self.train_step()
                if self.eval_data is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    last.update({f"eval/{k}": v for k, v in self.evaluate(self.eval_data.pairs).items()})
                if acc.is_main_process:
                    self._append_metrics(last)
                acc.log({k: v for k, v in last.items() if k != "step"}, step=self.step)
                progress.update(self.step, last)
                if self.bad_in_a_row >= cfg.nan_patience:
                    acc.end_training()
                    good = self._latest()
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
        """Preference accuracy and mean margin (beta times the log-ratio gap) on held-out pairs.

        With reference='cached', the pairs must be in the cache: pass them as `eval_data`.
        """
        model = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            out = self.log_ratio(pairs, 0, model, source="eval")
        margin = out.chosen - out.rejected
        return {
            "accuracy": (margin > 0).float().mean().item(),
            "margin": self.config.beta * margin.mean().item(),
        }

    # ------------------------------------------------------------ saving

    def checkpoint(self) -> Path | None:
        """Write checkpoints/step-N atomically: a temporary folder, then a rename; keep the newest few."""
        acc = self.accelerator
        acc.wait_for_everyone()
        root = self.out / "checkpoints"
        final = root / f"step-{self.step:06d}"
        if acc.is_main_process and not final.exists():
            tmp = root / f".step-{self.step:06d}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model = acc.unwrap_model(self.model)
            for name in self.trained:
                model.backend(name).save_pretrained(tmp / "components" / name)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            self._write_json(
                tmp / "state.json",
                {
                    "step": self.step,
                    "skipped": self.skipped,
                    "bad_in_a_row": self.bad_in_a_row,
                    "data": self.data.fingerprint(),
                },
            )
        acc.wait_for_everyone()
        if not final.exists():  # each process keeps its own SysDPO-Sampling candidates
            self._write_json(
                root / f".step-{self.step:06d}.tmp" / f"candidates-{acc.process_index}.json", self.store
            )
        acc.wait_for_everyone()
        if acc.is_main_process and not final.exists():
            (root / f".step-{self.step:06d}.tmp").rename(final)
            for old in sorted(root.glob("step-*"))[: -self.config.keep_checkpoints]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def _latest(self) -> Path | None:
        found = sorted((self.out / "checkpoints").glob("step-*"))
        return found[-1] if found else None

    def _restore(self) -> None:
        from compound.backends.base import load_trained

        latest = self._latest()
        if latest is None:
            raise CompoundError(
                [Diagnostic("error", "config", f"--resume: no checkpoint in {self.out}/checkpoints")]
            )
        state = json.loads((latest / "state.json").read_text())
        if state["data"] != self.data.fingerprint():
            raise CompoundError(
                [Diagnostic("error", "config", f"--resume: {latest} was trained on other data")]
            )
        model = self.accelerator.unwrap_model(self.model)
        for name in self.trained:
            backend = model.backend(name)
            weights = latest / "components" / name
            restored = load_trained(backend.model, weights, backend.component, _full_loader(backend))
            if restored is not backend.model:
                backend.model.load_state_dict(restored.state_dict())
        self.optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True))
        self.scheduler.load_state_dict(torch.load(latest / "scheduler.pt", weights_only=True))
        self.step, self.skipped, self.bad_in_a_row = state["step"], state["skipped"], state["bad_in_a_row"]
        stored = latest / f"candidates-{self.accelerator.process_index}.json"
        self.store = (
            {k: (v[0], v[1]) for k, v in json.loads(stored.read_text()).items()} if stored.exists() else {}
        )
        if self.accelerator.is_main_process:
            _truncate_metrics(self.out / "metrics.jsonl", self.step)

    def save_final(self) -> Path:
        """RUN/final: each trained component's weights (or adapter), and what to load them into."""
        acc = self.accelerator
        final = self.out / "final"
        acc.wait_for_everyone()
        if acc.is_main_process:
            model = acc.unwrap_model(self.model)
            tmp = self.out / ".final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for name in self.trained:
                model.backend(name).save_pretrained(tmp / name)
            self._write_json(
                tmp / RUN_FILE,
                {
                    "system": str(self.system_path.resolve()),
                    "trained": self.trained,
                    "lora": self.config.lora,
                    "step": self.step,
                },
            )
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        acc.wait_for_everyone()
        return final

    def _append_metrics(self, metrics: Mapping[str, float]) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")

    @staticmethod
    def _write_json(path: Path, value: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value, indent=2, default=str))
        tmp.replace(path)


def _accelerated() -> bool:
    """Whether an accelerator (CUDA, XPU, MPS) is present."""
    from accelerate.utils import is_mps_available, is_xpu_available

    return torch.cuda.is_available() or is_xpu_available() or is_mps_available()


def _full_loader(backend: Any) -> Callable[[Path], torch.nn.Module]:
    model = backend.model

    def load_full(path: Path) -> torch.nn.Module:
        return type(model).from_pretrained(path)

    return load_full


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past `step` (written after the checkpoint a resumed run starts from)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def _norm(params: Sequence[torch.Tensor]) -> float:
    grads = [p.grad.detach().float() for p in params if p.grad is not None]
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) if grads else 0.0


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in config.items()}


class _Progress:
    """A rich progress bar with ETA, loss and accuracy; or a log line every few percent; or nothing."""

    def __init__(self, total: int, done: int, mode: Literal["bar", "lines", "silent"]):
        self.total, self.mode = total, mode
        self.every = max(1, total // 20)
        if mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
            )
            self.task = self.bar.add_task("train", total=total, completed=done, status="")

    def __enter__(self) -> _Progress:
        if self.mode == "bar":
            self.bar.start()
        return self

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        status = f"loss {metrics['loss']:.4f}  acc {metrics['rewards/accuracy']:.2f}"
        if self.mode == "bar":
            self.bar.update(self.task, completed=step, status=status)
        elif self.mode == "lines" and (step % self.every == 0 or step == self.total):
            print(f"step {step}/{self.total}  {status}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.mode == "bar":
            self.bar.stop()
