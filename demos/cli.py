"""`compound demo` and `compound pretrain`: commands this package adds to the `compound` command line
(entry-point group `compound.commands`). Errors are raised as `CompoundError`s, which the command line
reports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from compound import CompoundError
from compound.diagnostics import error

console = Console(stderr=True, highlight=False, soft_wrap=True)


def demo(
    task: Annotated[
        str,
        typer.Argument(
            help="The experiment: progression (the paper's first application), moa (mixture of agents), "
            "moa2 (two layers) or text (a system's text and weights, SmolLM2)."
        ),
    ] = "progression",
    quick: Annotated[
        bool,
        typer.Option(help="The quick version: one seed, fewer requests and steps, the shipped base models."),
    ] = False,
    seeds: Annotated[
        list[int] | None, typer.Option(help="Seeds (repeatable); default 0 1 2, or 0 with --quick.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="The run folder: RESULTS.md, pictures, training plots (runs/TASK).")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Where pretrained base models are kept (~/.cache/compound/demo).")
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="How the trained rows train: online (rounds of `compound align` from the current system) "
            "or one-round (the paper's: once, on pairs of the base system's samples)."
        ),
    ] = "online",
) -> None:
    """Reproduce a paper experiment end to end with tiny models: pairs, the methods, seeds, RESULTS.md;
    or (text) optimize a real model's system's text and weights, alone and together."""
    if task == "text":
        from compound_demos import text

        sizes = text.TextSettings.quick(tuple(seeds) if seeds else None) if quick else text.TextSettings()
        if seeds and not quick:
            sizes = replace(sizes, seeds=tuple(seeds))
        path = text.run(out or Path("runs") / task, sizes, cache=cache, console=console)
        console.print(path.read_text(), markup=False, highlight=False)
        return
    from compound_demos import demo_task
    from compound_demos.protocol import run

    experiment = demo_task(task)
    settings = experiment.settings(quick=quick, seeds=tuple(seeds) if seeds else None)
    settings.protocol = protocol
    results = run(experiment, out or Path("runs") / task, settings, cache=cache, console=console)
    console.print(results.read_text(), markup=False, highlight=False)


def pretrain(
    task: Annotated[str, typer.Argument(help="The demo whose base models to pretrain: progression or moa.")],
    out: Annotated[Path, typer.Option(help="Where to save the base models (one folder each).")],
    steps: Annotated[
        list[int] | None,
        typer.Option(
            help="Training steps per base model, in order (progression: writer, painter; moa: proposer, "
            "aggregator); default: the demo's."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Pretrain a demo's base models on synthetic data of the project's (`compound demo` caches them)."""
    from compound_demos import demo_task
    from compound_demos.pretrain import MIN_PRETRAIN_STEPS

    experiment = demo_task(task)
    default = experiment.settings(quick=False, seeds=None).pretrain
    if steps and len(steps) != len(default):
        raise error("config", f"{task} has {len(default)} base models: give --steps {len(default)} times")
    if steps and min(steps) < MIN_PRETRAIN_STEPS:
        raise error(
            "config",
            f"--steps {min(steps)}: pretraining needs at least {MIN_PRETRAIN_STEPS} steps per model "
            "(a warm-up step, then a decay)",
        )
    console.print(f"wrote {experiment.pretrain(out, steps or default, seed)}")


__all__ = ["CompoundError", "demo", "pretrain"]
