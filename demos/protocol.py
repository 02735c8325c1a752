"""The protocol every `compound demo` experiment follows (the paper's, for both of its applications).

1. Base models: pretrained by the task on synthetic data (cached under
   ~/.cache/compound/demo or --cache; --quick starts from small base
   checkpoints that the task's own pretraining command produced and the
   package ships).
2. Pairs: the base system samples `samples` rows per training request, `rounds`
   times; the task's scorer scores them; each group's best is paired against
   its worst (if the best scores at least `min_chosen`, when a task sets it).
3. Methods on held-out requests, all with the same pairs, settings and
   evaluation draws: the system before alignment, best-of-4 (the scorer picks),
   each component trained alone, and SysDPO (all jointly); a task may add
   variants (e.g. without the NLL term).
4. Every seed repeats 2-3; RESULTS.md reports mean and spread, the task shows
   the same held-out requests under each method, and `compound report` plots
   each training run.

A task supplies the world (requests, scores, metrics, pretraining, the system
file); this module runs the protocol the same way for all of them.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console

from compound import CompiledSystem, TrainConfig, Trainer, load
from compound.align import AlignConfig, align
from compound.credit import credit
from compound.diagnostics import error
from compound.report import report
from compound.samples import Sample, read, write
from compound.samples.pairing import pairs
from compound.scorers import Scorer
from compound.seeds import splitmix


@dataclass(frozen=True)
class Method:
    """One row of the table: which components train (none: the base system), how many samples the scorer
    picks from, and the NLL weight when it differs from the settings'. With `online` rounds the method
    trains through `compound align`: each round samples the current system (with `pairing`: best
    against worst, or each group of samples as one `ranked` list); with 0, on the pairs of the base
    system's samples (the one-round protocol)."""

    name: str
    train: tuple[str, ...] = ()
    best_of: int = 1
    nll: float | None = None
    online: int = 0
    pairing: str = "best-worst"
    auto_beta: bool = False
    node_betas: tuple[tuple[str, float], ...] = ()
    credit: bool = False  # run `compound credit` on the first seed's online run

    def config(self, settings: Settings, seed: int) -> TrainConfig:
        """The training settings of this row: the run's, with its components, seed, NLL and betas."""
        return settings.train.model_copy(
            update={
                "train": list(self.train),
                "seed": seed,
                "nll": settings.train.nll if self.nll is None else self.nll,
                "auto_beta": self.auto_beta,
                "node_betas": dict(self.node_betas),
            }
        )

    @property
    def folder(self) -> str:
        return self.name.lower().replace(" ", "-").replace("(", "").replace(")", "").replace(",", "")


def paper_methods(first: tuple[str, str], second: tuple[str, str]) -> tuple[Method, ...]:
    """The paper's five rows for a system of two trainable components, each given as (row name, component):
    before alignment, best-of-4, each component trained alone, and SysDPO (both jointly)."""
    return (
        Method("before alignment"),
        Method("best-of-4", best_of=4),
        Method(first[0], (first[1],)),
        Method(second[0], (second[1],)),
        Method("SysDPO (joint)", (first[1], second[1])),
    )


#: How the trained rows train (`Settings.protocol`).
PROTOCOLS = ("online", "one-round")


def runs_in(method: Method, protocol: str) -> bool:
    """Whether a row belongs to a protocol: the untrained rows to both, trained ones to theirs."""
    return not method.train or (method.online > 0) == (protocol == "online")


#: `Settings.reference`, in words.
REFERENCES = {"initial": "the base system", "round": "each round's start"}

#: Rounds of the online rows (`compound align`), with the one-round protocol's budget.
ONLINE = 3


def online_methods(
    first: tuple[str, str], second: tuple[str, str], ranked: bool = True
) -> tuple[Method, ...]:
    """The loop practitioners run: online rounds from the current system, each component alone and
    both jointly, with best-against-worst pairs; and (`ranked`) with ranked lists, jointly and for the
    first component alone (the stronger one in the demos: joint against the best single setting with
    the same tools)."""
    both = (first[1], second[1])
    lists = f"{ONLINE} online rounds, ranked lists"
    return (
        Method(f"{first[0]}, {ONLINE} online rounds", (first[1],), online=ONLINE),
        *([Method(f"{first[0]}, {lists}", (first[1],), online=ONLINE, pairing="ranked")] if ranked else []),
        Method(f"{second[0]}, {ONLINE} online rounds", (second[1],), online=ONLINE),
        Method(f"SysDPO (joint), {ONLINE} online rounds", both, online=ONLINE, credit=True),
        *([Method(f"SysDPO (joint), {lists}", both, online=ONLINE, pairing="ranked")] if ranked else []),
    )


@dataclass(frozen=True)
class Column:
    """One metric column of RESULTS.md: its header, its key in `Task.summarize`, in percent or with digits."""

    header: str
    key: str
    percent: bool = False
    digits: int = 2


def training(**settings: Any) -> TrainConfig:
    """A demo's training settings: `TrainConfig`'s, with the demos' defaults under the ones given."""
    defaults: dict[str, Any] = {
        "steps": 200,
        "batch_size": 16,
        "beta": 0.2,
        "learning_rate": 3e-4,
        "nll": 0.2,  # RPO: the chosen side's NLL keeps DPO from displacing probability onto bad outputs
        "quiet": True,
        "report_to": [],
    }
    return TrainConfig(**{**defaults, **settings})


@dataclass
class Settings:
    """What a run does; a task's `quick()` settings are the quick version. `train` holds the training
    settings (each method overrides which components train, the seed and, if it says so, the NLL)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    samples: int = 4  # per training request, to pair best against worst
    rounds: int = 1  # times each training request is sampled (and paired) anew
    min_chosen: float | None = None  # pair a group only when its best scores at least this (None: always)
    eval_samples: int = 4  # per held-out request and method
    train: TrainConfig = field(default_factory=training)
    pretrain: tuple[int, ...] = ()  # steps per base model; empty: the shipped quick checkpoints
    train_requests: int | None = None  # a random subset of the training requests (None: all)
    evaluate_on: str = "held"  # for tuning without peeking: "validation" (see `requests`) or "train"
    eval_requests: int | None = None  # a random subset of the evaluation requests (None: all)
    showcase: tuple[str, ...] = ()  # the held-out requests shown under every method
    skip: tuple[str, ...] = ()  # methods left out (by name), e.g. to keep a test short
    # "online": trained rows run rounds of `compound align` from the current system (the `online` methods);
    # "one-round": the paper's protocol, trained once on pairs of the base system's samples
    protocol: str = "online"
    online: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields the online rows use instead
    # the online rows' training per round: None, the one-round steps / rounds; a number, that many passes
    # over each round's pairs (or lists), so that a round whose current system left fewer pairs (the
    # better it gets, the fewer groups mix right and wrong) trains fewer steps rather than overfitting them
    online_epochs: float | None = None
    # the online rows' reference (`compound align --reference`): "round", each round's start (iterative DPO),
    # or "initial", the base system. Validation requests, online rows, initial -> round: moa (seeds 0 1 2)
    # proposers only 87.1% -> 91.3%, joint 90.4% -> 93.2%; moa2 92.4% -> 93.7%, 91.2% -> 93.4%; progression
    # (seeds 0 1, order consistency) writer only 65% -> 76%, joint 66% -> 79% (docs/experiments/demo.md,
    # docs/experiments/moa.md)
    reference: Literal["initial", "round"] = "round"

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (training: what differs from TrainConfig's defaults)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self)}
        return plain | {"train": self.train.model_dump(exclude_defaults=True)}


class Task(ABC):
    """A demo's world: its requests, its scorer and metrics, its base models and its system file."""

    name: str
    methods: tuple[Method, ...]
    columns: tuple[Column, ...]
    title: str

    @abstractmethod
    def settings(self, quick: bool, seeds: tuple[int, ...] | None) -> Settings: ...

    @abstractmethod
    def pretrain(self, out: Path, steps: Sequence[int], seed: int = 0, quiet: bool = False) -> Path: ...

    @abstractmethod
    def system_file(self, out: Path, base: Path, settings: Settings) -> Path: ...

    @abstractmethod
    def requests(self, split: str) -> list[Any]:
        """Training ("train") or held-out ("held") requests, or "validation": training requests that are
        kept out of the pairs when scored on, built like the held-out ones (for tuning without touching
        them). Each has `.text` and `.inputs` (a data row)."""

    @abstractmethod
    def score(self, row: Mapping[str, Any], request: Any) -> float:
        """The preference score of a sampled row: pairs and best-of-N rank by it."""

    @abstractmethod
    def summarize(self, rows: Sequence[Mapping[str, Any]], requests: Sequence[Any]) -> dict[str, float]:
        """The table's metrics over rows sampled for `requests` (in order)."""

    @abstractmethod
    def show(
        self, shown: Mapping[str, Sequence[Mapping[str, Any]]], requests: Sequence[Any], out: Path
    ) -> str:
        """Markdown showing the same requests under every method (a picture, a table)."""

    def cache_key(self, settings: Settings) -> str:
        return f"{self.name}-" + "-".join(map(str, settings.pretrain))

    def describe_pairs(self, prefs: Path) -> str:
        """What the pairs hold for each component, in a few words for RESULTS.md (e.g. how faithful the
        chosen and the rejected images are); empty when the task has nothing to say."""
        return ""


def base_models(task: Task, settings: Settings, cache: str | Path | None, console: Console) -> Path:
    """The task's pretrained models: the shipped small ones (quick), or pretrained once and cached."""
    if not settings.pretrain:
        shipped = Path(str(files("compound_demos") / "base" / task.name))
        console.print(f"base models: the shipped quick checkpoints ({shipped})")
        return shipped
    folder = (Path(cache).expanduser() if cache else Path.home() / ".cache" / "compound" / "demo") / (
        task.cache_key(settings)
    )
    if (folder / "pretrain.json").exists():
        console.print(f"base models: cached in {folder}")
        return folder
    console.print(f"base models: pretraining into {folder} (once; later runs reuse them)")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    task.pretrain(tmp, settings.pretrain)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def sample_scored(
    task: Task, system: CompiledSystem, requests: Sequence[Any], n: int, seed: int
) -> list[tuple[Any, dict[str, Any], float]]:
    """n rows per request, each with its request and score."""
    rows = system.sample([r.inputs for r in requests], n=n, generator=torch.Generator().manual_seed(seed))
    repeated = [r for r in requests for _ in range(n)]
    return [(r, row, task.score(row, r)) for r, row in zip(repeated, rows, strict=True)]


def best(
    scored: Sequence[tuple[Any, dict[str, Any], float]], k: int
) -> list[tuple[Any, dict[str, Any], float]]:
    """The scorer's pick of every consecutive group of k."""
    return [max(scored[j : j + k], key=lambda s: s[2]) for j in range(0, len(scored), k)]


def make_pairs(
    task: Task, system: CompiledSystem, requests: Sequence[Any], settings: Settings, seed: int, folder: Path
) -> tuple[Path, int]:
    """Best-against-worst pairs of the base system's samples, as preference JSONL (images as PNG)."""
    sampled = {n.base for n in system.system.nodes if n.kind == "sample"}
    samples = []
    for k in range(settings.rounds):  # each round: every request sampled anew, its best paired with its worst
        scored = sample_scored(task, system, requests, settings.samples, splitmix(seed, 1, k))
        samples += [
            Sample(
                f"{k}-{j // settings.samples}-{j % settings.samples}",
                {**r.inputs, "round": k},
                {name: value for name, value in row.items() if name in sampled},
                q,
            )
            for j, (r, row, q) in enumerate(scored)
        ]
    written = write(samples, folder / "samples")
    made = pairs(read(written.parent), "best-worst", 1e-6, relative_to=folder, min_chosen=settings.min_chosen)
    if not made.pairs:
        raise error(
            "config",
            f"the base system's {len(samples)} samples gave no preference pair: every request's "
            "samples scored the same or below min_chosen (are the base models pretrained?)",
        )
    for pair in made.pairs:
        del pair["input"]["round"]
    path = folder / "prefs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in made.pairs))
    return path, len(made.pairs)


def request_scorer(task: Task, requests: Sequence[Any]) -> Scorer:
    """The task's score as a `compound` scorer of sampled rows: each row's request found by its inputs."""
    by_inputs = {json.dumps(r.inputs, sort_keys=True): r for r in requests}
    keys = list(requests[0].inputs)

    def score(row: Mapping[str, Any]) -> float:
        return task.score(row, by_inputs[json.dumps({k: row[k] for k in keys}, sort_keys=True)])

    return score


def credit_of(task: Task, online: Path, held: Sequence[Any], settings: Settings) -> dict[str, float]:
    """`compound credit` of an online run on the held-out requests: the mean score of the base system,
    the trained one, and the trained one with each trained component reverted."""
    path = online.parent / "held.jsonl"
    path.write_text("".join(json.dumps(r.inputs) + "\n" for r in held))
    table = credit(online, path, scorer=request_scorer(task, held), eval_samples=settings.eval_samples)
    return {row["system"]: row["mean_score"] for row in table}


def online_budget(settings: Settings, rounds: int) -> tuple[int, int | None, int]:
    """The one-round protocol's budget spread over `rounds`: samples per request and round, steps per
    round (None: `settings.online_epochs` passes over each round's pairs instead), and ranked lists per
    batch (as many outputs as a batch of pairs)."""
    samples = max(1, settings.rounds // rounds) * settings.samples
    steps = None if settings.online_epochs else max(1, (settings.train.steps or 1) // rounds)
    return samples, steps, max(1, settings.train.batch_size * 2 // samples)


def per_round(settings: Settings, rounds: int) -> str:
    """How much an online round trains, in words."""
    steps = online_budget(settings, rounds)[1]
    return f"{steps} steps per round" if steps else f"{settings.online_epochs:g} passes over a round's pairs"


def train_online(
    task: Task,
    cmp: Path,
    method: Method,
    settings: Settings,
    seed: int,
    folder: Path,
    requests: Sequence[Any],
) -> tuple[Path, list[dict[str, Any]]]:
    """Train a method in `method.online` rounds of `compound align`, with the budget of the one-round
    protocol: the same training steps in all (or `settings.online_epochs` passes over each round's
    pairs), each request sampled as often (its `settings.rounds` x `settings.samples` samples spread
    over the rounds, each round's scored as one group), and as many outputs scored per step (a ranked
    list of n outputs counts as n / 2 pairs). Returns the last round's weights and the summary."""
    rounds = method.online
    samples, steps, lists = online_budget(settings, rounds)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = folder / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(r.inputs) + "\n" for r in requests))
    batch = lists if method.pairing == "ranked" else settings.train.batch_size
    config = AlignConfig(
        system=str(cmp),
        inputs=str(inputs),
        scorer=f"{task.name} (the demo's own)",  # a label: the scorer is the object below
        rounds=rounds,
        samples=samples,
        pairing=method.pairing,
        reference=settings.reference,
        min_gap=1e-6,
        min_chosen=settings.min_chosen,
        seed=seed,
        train=method.config(settings, seed).model_copy(
            update={
                "steps": steps,
                "epochs": settings.online_epochs or settings.train.epochs,
                "batch_size": batch,
                **settings.online,
            }
        ),
    )
    summary = align(
        config,
        folder / "online",
        resume=(folder / "online" / "align.json").exists(),
        scorer=request_scorer(task, requests),
    )
    trained = [r["round"] for r in summary if "loss" in r]
    if not trained:
        raise error("config", f"{method.name}: no round of the online run found a preference pair")
    final = folder / "online" / f"round-{trained[-1]}" / "train"
    report(final)
    return final / "final", summary


def evaluate(
    task: Task, system: CompiledSystem, requests: Sequence[Any], settings: Settings, seed: int, best_of: int
) -> dict[str, float]:
    """Metrics over eval_samples rows per held-out request (each the scorer's best of `best_of`)."""
    kept = best(
        sample_scored(task, system, requests, settings.eval_samples * best_of, splitmix(seed, 2)), best_of
    )
    return task.summarize([row for _, row, _ in kept], [r for r, _, _ in kept])


def split(task: Task, evaluate_on: str) -> tuple[list[Any], list[Any]]:
    """(requests to pair, requests to score on): validation requests never reach the pairs."""
    scored = task.requests(evaluate_on)
    kept = {r.text for r in scored} if evaluate_on == "validation" else set()
    return [r for r in task.requests("train") if r.text not in kept], scored


def run(
    task: Task,
    out: str | Path,
    settings: Settings | None = None,
    cache: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    """Run the whole protocol into `out`; returns the path of RESULTS.md."""
    settings = settings or task.settings(quick=False, seeds=None)
    if settings.protocol not in PROTOCOLS:
        raise error("config", f"protocol {settings.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cmp = task.system_file(out, base_models(task, settings, cache, console), settings)
    train_requests, held = split(task, settings.evaluate_on)
    if settings.train_requests:
        train_requests = random.Random(0).sample(train_requests, settings.train_requests)
    if settings.eval_requests:
        held = random.Random(1).sample(held, settings.eval_requests)
    methods = [m for m in task.methods if m.name not in settings.skip and runs_in(m, settings.protocol)]
    results: dict[str, list[dict[str, float]]] = {m.name: [] for m in methods}
    made: dict[int, str] = {}  # per seed: the number of pairs, and what the task says of them
    online: dict[str, list[list[float]]] = {}  # per online method and seed: the training samples' mean score
    credits: dict[str, dict[str, float]] = {}  # per method with `credit`: each variant's mean score
    shown: dict[str, list[dict[str, Any]]] = {}
    showcase = [r for r in held if r.text in settings.showcase]
    if len(showcase) < len(settings.showcase):  # e.g. when scoring on the validation split
        missing = sorted(set(settings.showcase) - {r.text for r in showcase})
        console.print(f"not shown (not among the requests scored on): {', '.join(map(repr, missing))}")
    for seed in settings.seeds:
        folder = out / f"seed-{seed}"
        base = load(cmp)
        console.print(f"[bold]seed {seed}[/]: {len(train_requests)} training requests, {settings.protocol}")
        prefs = folder / "prefs.jsonl"
        if any(m.train and not m.online for m in methods):
            console.print(
                f"  pairs from {len(train_requests)} training requests x {settings.samples} samples x "
                f"{settings.rounds} rounds"
            )
            prefs, count = make_pairs(task, base, train_requests, settings, seed, folder)
            described = task.describe_pairs(prefs)
            made[seed] = f"{count}" + (f" ({described})" if described else "")
            console.print(f"  {made[seed]} pairs")
        console.print(f"  evaluating on {len(held)} held-out requests x {settings.eval_samples}")
        for method in methods:
            system = base
            if method.train and method.online:
                run_dir = folder / method.folder
                console.print(
                    f"  training {method.name}: {method.online} rounds, {per_round(settings, method.online)}"
                )
                weights, summary = train_online(task, cmp, method, settings, seed, run_dir, train_requests)
                online.setdefault(method.name, []).append([r["train_mean_score"] for r in summary])
                system = load(cmp, weights=weights)
                if method.credit and seed == settings.seeds[0]:
                    console.print(f"  credit of {method.name}")
                    credits[method.name] = credit_of(task, run_dir / "online", held, settings)
            elif method.train:
                run_dir = folder / method.folder
                console.print(f"  training {method.name}: {settings.train.steps} steps")
                Trainer(cmp, prefs, run_dir, method.config(settings, seed)).train()
                report(run_dir)
                system = load(cmp, weights=run_dir / "final")
            results[method.name].append(evaluate(task, system, held, settings, seed, method.best_of))
            if seed == settings.seeds[0] and showcase:
                scored = sample_scored(task, system, showcase, method.best_of, splitmix(seed, 3))
                shown[method.name] = [row for _, row, _ in best(scored, method.best_of)]
        key = task.columns[0].key
        console.print("  " + ", ".join(f"{m}: {key} {results[m][-1][key]:.2f}" for m in results))
    showing = task.show(shown, showcase, out) if showcase else ""
    minutes = (time.perf_counter() - started) / 60
    path = out / "RESULTS.md"
    path.write_text(
        results_md(
            task, results, settings, minutes, showing, len(train_requests), len(held), made, online, credits
        )
    )
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": settings.as_dict(),
                "results": results,
                "pairs": made,
                "online": online,
                "credit": credits,
            },
            indent=2,
        )
    )
    console.print(f"wrote {path} ({minutes:.1f} minutes)")
    return path


def protocol(settings: Settings, train: int) -> str:
    """The RESULTS.md sentence on how the trained rows trained."""
    if settings.protocol == "one-round":
        return (
            f"Trained rows: pairs of the base system's samples, from {train} training requests x "
            f"{settings.samples} samples x {settings.rounds} rounds (best against worst), "
            f"{settings.train.steps} steps."
        )
    samples, _, lists = online_budget(settings, ONLINE)
    return (
        f"Trained rows: {ONLINE} rounds of `compound align` from the current system (reference: "
        f"{REFERENCES[settings.reference]}), each sampling {train} training requests x {samples} and "
        f"pairing each request's best against its worst (or ranking them all: ranked lists), "
        f"{per_round(settings, ONLINE)} (ranked lists: {lists} lists per batch, as many outputs as the "
        "pairs' batches)" + (f", with {json.dumps(settings.online)}." if settings.online else ".")
    )


def results_md(
    task: Task,
    results: dict[str, list[dict[str, float]]],
    settings: Settings,
    minutes: float,
    showing: str,
    train: int,
    held: int,
    made: Mapping[int, str],
    online: Mapping[str, Sequence[Sequence[float]]],
    credits: Mapping[str, Mapping[str, float]],
) -> str:
    def cell(method: str, column: Column) -> str:
        (scale, unit), digits = (100, "%") if column.percent else (1, ""), column.digits
        values = [r[column.key] * scale for r in results[method]]
        if any(math.isnan(v) for v in values):  # e.g. the unseen intent when scoring on training requests
            return "–"
        spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.{digits}f}{unit}{spread}"

    quick = not settings.pretrain
    default = task.settings(quick=quick, seeds=None)
    flags = (
        (" --quick" if quick else "")
        + ("".join(f" --seeds {s}" for s in settings.seeds) if settings.seeds != default.seeds else "")
        + (f" --protocol {settings.protocol}" if settings.protocol != default.protocol else "")
    )
    same = replace(settings, seeds=default.seeds, protocol=default.protocol) == default
    lines = [
        f"# compound demo: {task.title}",
        "",
        f"Command: `compound demo {task.name}{flags}`{'' if same else ' (settings changed in Python)'} "
        f"({minutes:.1f} minutes on this machine, base models "
        f"{'shipped' if quick else 'pretrained or cached'}).",
        protocol(settings, train),
        f"Evaluation on {held} held-out requests x {settings.eval_samples} samples, the same draws for every "
        f"method. Mean{' ± standard deviation' if len(settings.seeds) > 1 else ''} over seeds "
        f"{' '.join(map(str, settings.seeds))}.",
    ]
    if made:
        lines.append(
            "Pairs per seed: " + "; ".join(f"seed {seed}: {text}" for seed, text in made.items()) + "."
        )
    lines += [
        "",
        "| method | " + " | ".join(c.header for c in task.columns) + " |",
        "|---|" + "---|" * len(task.columns),
    ]
    lines += [f"| {m} | " + " | ".join(cell(m, c) for c in task.columns) + " |" for m in results]
    if online:
        lines += [
            "",
            "The online rows' training samples, mean score by round (the current system's samples; mean "
            "over seeds):",
            "",
        ]
        lines += [
            f"- {m}: " + " -> ".join(f"{statistics.fmean(r):.2f}" for r in zip(*by_seed, strict=True))
            for m, by_seed in online.items()
        ]
    if credits:
        variants = list(next(iter(credits.values())))
        lines += [
            "",
            f"Credit (`compound credit`, seed {settings.seeds[0]}): the held-out mean score of the base "
            "system, the trained one, and the trained one with each trained component reverted to its base "
            "model (the same draws):",
            "",
            "| method | " + " | ".join(variants) + " |",
            "|---|" + "---|" * len(variants),
            *(f"| {m} | " + " | ".join(f"{v[k]:.3f}" for k in variants) + " |" for m, v in credits.items()),
        ]
    lines += ["", f"Settings: {json.dumps(settings.as_dict())}", "", showing, ""]
    return "\n".join(lines)
