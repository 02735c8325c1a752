"""`compound demo progression`: the protocol of the paper's first experiment, end to end.

1. Base models: pretrained by `compound.demo.pretrain` (cached under
   ~/.cache/compound/demo or --cache; --quick starts from the small base
   checkpoints that command produced and the package ships).
2. Pairs: the base system samples 4 sequences per training request; the
   progression scorer scores them; best is paired against worst.
3. Five methods on the held-out requests (phrasings, a prefix and a whole
   attribute-direction combination that no pair contains): the system before
   alignment, best-of-4 sampling (the scorer picks), only the writer trained,
   only the painter trained, and SysDPO (both jointly), all with the same
   training pairs, settings and evaluation draws.
4. Every seed repeats 2-3; RESULTS.md reports mean and spread, a PNG grid shows
   the same held-out requests under each method, and `compound report` plots
   each training run.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from compound.demo import progression as task
from compound.demo.evaluate import score, summarize
from compound.emit import CompiledSystem, load
from compound.train import Trainer, splitmix

METHODS = ("before alignment", "best-of-4", "writer only", "painter only", "SysDPO (joint)")
TRAINED = {"writer only": ["writer"], "painter only": ["painter"], "SysDPO (joint)": ["writer", "painter"]}


@dataclass
class Settings:
    """What a run does; `quick()` is the 3-minute version."""

    seeds: tuple[int, ...] = (0, 1, 2)
    samples: int = 4  # per training request, to pair best against worst
    rounds: int = 6  # times each training request is sampled (and paired) anew
    eval_samples: int = 6  # per held-out request and method
    steps: int = 240
    batch_size: int = 16
    beta: float = 0.5
    lr_writer: float = 3e-4
    lr_painter: float = 3e-5  # 1e-4 damaged the painter; 1e-5 barely moved it (tuned on training requests)
    painter_weight: float = 1.0  # scales the painter's ELBO log ratio against the writer's exact one
    timesteps: int = 4  # (t, noise) draws per image in the ELBO surrogate
    nll: float = 0.2  # RPO: the chosen plans' NLL keeps the writer from displacing probability
    denoising_steps: int = 20  # DDIM steps when sampling images
    pretrain: tuple[int, int] = (1500, 1500)  # writer, painter steps
    train_requests: int | None = None  # all
    evaluate_on: str = "held"  # "train": score on training requests instead, for tuning without peeking
    grid_requests: tuple[str, ...] = field(
        default=(
            "a disc expanding",
            "a scene getting darker",
            "a dot moving left",
            "picture a dot drifting rightward",
        )
    )

    @classmethod
    def quick(cls, seeds: tuple[int, ...] = (0,)) -> Settings:
        return cls(seeds=seeds, rounds=3, eval_samples=4, steps=80, train_requests=30, pretrain=(0, 0))


def cache_dir(cache: str | Path | None) -> Path:
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "compound" / "demo"


def base_models(settings: Settings, cache: str | Path | None, console: Console) -> Path:
    """The pretrained writer and painter: the shipped small ones (quick), or pretrained once and cached."""
    from compound.demo.pretrain import pretrain

    if settings.pretrain == (0, 0):
        shipped = Path(str(files("compound.demo") / "base" / "progression"))
        console.print(f"base models: the shipped quick checkpoints ({shipped})")
        return shipped
    key = f"progression-w{settings.pretrain[0]}-p{settings.pretrain[1]}-j{task.JITTER}"
    folder = cache_dir(cache) / key
    if (folder / "pretrain.json").exists():
        console.print(f"base models: cached in {folder}")
        return folder
    console.print(f"base models: pretraining into {folder} (once; later runs reuse them)")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pretrain(tmp, *settings.pretrain)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def system_file(out: Path, base: Path, settings: Settings) -> Path:
    pattern = task.PATTERN.replace("\\", "\\\\")
    path = out / "progression.cmp"
    path.write_text(
        "# The progression system of compound's demo: a writer plans three scenes, a painter renders them.\n"
        "system progression\n\n"
        f'component writer  = causal_lm("{base / "writer"}")\n'
        f'component painter = diffusion("{base / "painter"}", steps={settings.denoising_steps}, '
        f"timesteps={settings.timesteps})\n\n"
        "input request : text\n\n"
        f'plan     : text  ~ writer(request, template="{task.PROMPT.replace(chr(10), chr(92) + "n")}", '
        f'max_new_tokens=24,\n                        pattern="{pattern}")\n'
        "scene[3] : text  = line(plan, i)\n"
        f"image[3] : image ~ painter(scene[i], weight={settings.painter_weight})\n\n"
        "output image\n"
    )
    return path


def sample_scored(
    system: CompiledSystem, requests: Sequence[task.Request], n: int, seed: int
) -> list[tuple[task.Request, dict[str, Any], float, bool]]:
    """n rows per request, each with its score and order consistency."""
    rows = system.sample(
        [{"request": r.text} for r in requests], n=n, generator=torch.Generator().manual_seed(seed)
    )
    repeated = [r for r in requests for _ in range(n)]
    return [(r, row, *score(row, r)) for r, row in zip(repeated, rows, strict=True)]


def make_pairs(
    system: CompiledSystem, requests: Sequence[task.Request], settings: Settings, seed: int, folder: Path
) -> tuple[Path, int]:
    """Best-against-worst pairs of the base system's samples, as preference JSONL with PNG images."""
    from compound.samples import Sample, pairs, read, write

    samples = []
    for k in range(settings.rounds):  # each round: every request sampled anew, its best paired with its worst
        scored = sample_scored(system, requests, settings.samples, splitmix(seed, 1, k))
        samples += [
            Sample(
                f"{k}-{j // settings.samples}-{j % settings.samples}",
                {"request": r.text, "round": k},
                {"plan": row["plan"], "image": row["image"]},
                q,
            )
            for j, (r, row, q, _) in enumerate(scored)
        ]
    written = write(samples, folder / "samples")
    made = pairs(read(written.parent), "best-worst", 1e-6, relative_to=folder)
    for pair in made.pairs:
        del pair["input"]["round"]
    path = folder / "prefs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in made.pairs))
    return path, len(made.pairs)


def evaluate(
    system: CompiledSystem, requests: Sequence[task.Request], settings: Settings, seed: int, best_of: int = 1
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics over eval_samples rows per held-out request (each the best of `best_of` by the scorer)."""
    scored = sample_scored(system, requests, settings.eval_samples * best_of, splitmix(seed, 2))
    kept = [max(scored[k : k + best_of], key=lambda s: s[2]) for k in range(0, len(scored), best_of)]
    rows = [row for _, row, _, _ in kept]
    return summarize(rows, [r for r, _, _, _ in kept]), rows


def run(
    out: str | Path,
    settings: Settings | None = None,
    cache: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    """Run the whole protocol into `out`; returns the path of RESULTS.md."""
    from compound.report import report

    settings = settings or Settings()
    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = base_models(settings, cache, console)
    cmp = system_file(out, base, settings)
    train_requests, held = task.requests("train"), task.requests(settings.evaluate_on)
    if settings.train_requests:
        train_requests = random.Random(0).sample(train_requests, settings.train_requests)
    results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    grid: dict[str, list[dict[str, Any]]] = {}
    grid_requests = [r for r in held if r.text in settings.grid_requests]
    for seed in settings.seeds:
        folder = out / f"seed-{seed}"
        system = load(cmp)
        console.print(
            f"[bold]seed {seed}[/]: pairs from {len(train_requests)} training requests x "
            f"{settings.samples} samples"
        )
        prefs, count = make_pairs(system, train_requests, settings, seed, folder)
        console.print(
            f"  {count} pairs; evaluating on {len(held)} held-out requests x {settings.eval_samples}"
        )
        metrics, _ = evaluate(system, held, settings, seed)
        results["before alignment"].append(metrics)
        results["best-of-4"].append(evaluate(system, held, settings, seed, best_of=4)[0])
        if seed == settings.seeds[0]:
            grid["before alignment"] = _grid_rows(system, grid_requests, seed)
            grid["best-of-4"] = _grid_rows(system, grid_requests, seed, best_of=4)
        for method, trained in TRAINED.items():
            run_dir = folder / method.split()[0].replace("(", "")
            trainer = Trainer(
                cmp,
                prefs,
                run_dir,
                beta=settings.beta,
                learning_rate=settings.lr_writer,
                learning_rates={"painter": settings.lr_painter},
                steps=settings.steps,
                batch_size=settings.batch_size,
                nll=settings.nll,
                train=trained,
                seed=seed,
                quiet=True,
                report_to=[],
            )
            console.print(f"  training {method}: {settings.steps} steps")
            trainer.train()
            report(run_dir)
            aligned = load(cmp, weights=run_dir / "final")
            results[method].append(evaluate(aligned, held, settings, seed)[0])
            if seed == settings.seeds[0]:
                grid[method] = _grid_rows(aligned, grid_requests, seed)
        console.print("  " + ", ".join(f"{m}: order {results[m][-1]['order']:.2f}" for m in METHODS))
    grid_png = _draw_grid(grid, grid_requests, out / "grid.png")
    minutes = (time.perf_counter() - started) / 60
    path = out / "RESULTS.md"
    path.write_text(_results_md(results, settings, minutes, grid_png, len(train_requests), len(held)))
    (out / "results.json").write_text(
        json.dumps({"settings": asdict(settings), "results": results}, indent=2)
    )
    console.print(f"wrote {path} ({minutes:.1f} minutes)")
    return path


def _grid_rows(
    system: CompiledSystem, requests: Sequence[task.Request], seed: int, best_of: int = 1
) -> list[dict[str, Any]]:
    """One sample per request (the scorer's best of `best_of`), the same draws for every method."""
    scored = sample_scored(system, requests, best_of, splitmix(seed, 3))
    return [max(scored[k : k + best_of], key=lambda s: s[2])[1] for k in range(0, len(scored), best_of)]


def _draw_grid(grid: dict[str, list[dict[str, Any]]], requests: Sequence[task.Request], path: Path) -> Path:
    """One row per method, one group of three images per held-out request."""
    from PIL import Image, ImageDraw

    thumb, gap, label = 48, 10, 130
    width = label + len(requests) * (3 * thumb + gap)
    sheet = Image.new("RGB", (width, 22 + len(METHODS) * (thumb + 8)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, request in enumerate(requests):
        draw.text((label + j * (3 * thumb + gap), 4), request.text[:28], fill="black")
    for i, method in enumerate(m for m in METHODS if m in grid):
        top = 22 + i * (thumb + 8)
        draw.text((4, top + thumb // 2 - 6), method, fill="black")
        for j, row in enumerate(grid[method]):
            for k, image in enumerate(row["image"]):
                sheet.paste(
                    image.convert("RGB").resize((thumb, thumb), Image.Resampling.NEAREST),
                    (label + j * (3 * thumb + gap) + k * thumb, top),
                )
    sheet.save(path)
    return path


def _results_md(
    results: dict[str, list[dict[str, float]]],
    settings: Settings,
    minutes: float,
    grid: Path,
    train: int,
    held: int,
) -> str:
    def cell(method: str, key: str, percent: bool = False) -> str:
        values = [r[key] * (100 if percent else 1) for r in results[method]]
        spread = f" ± {statistics.stdev(values):.{0 if percent else 2}f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.{0 if percent else 2}f}{'%' if percent else ''}{spread}"

    seeds = " ".join(map(str, settings.seeds))
    quick = settings.pretrain == (0, 0)
    default = (0,) if quick else (0, 1, 2)
    flags = (" --quick" if quick else "") + (
        "".join(f" --seeds {s}" for s in settings.seeds) if settings.seeds != default else ""
    )
    lines = [
        "# compound demo: the progression experiment",
        "",
        f"Command: `compound demo progression{flags}` ({minutes:.1f} minutes on this machine, base models "
        f"{'shipped' if quick else 'pretrained or cached'}).",
        f"Pairs from {train} training requests x {settings.samples} samples (best against worst); "
        f"evaluation on {held} held-out requests x {settings.eval_samples} samples, the same draws for every "
        f"method. Mean{' ± standard deviation' if len(settings.seeds) > 1 else ''} over seeds {seeds}.",
        "",
        "| method | preference score q | order consistency | plans in order | canonical words |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m} | {cell(m, 'q')} | {cell(m, 'order', True)} | {cell(m, 'plan_ordered', True)} | "
        f"{cell(m, 'plan_canonical', True)} |"
        for m in METHODS
    ]
    lines += ["", f"Settings: {json.dumps(asdict(settings))}", "", f"![grid]({grid.name})", ""]
    return "\n".join(lines)
