"""`compound align SYSTEM --inputs FILE --scorer SPEC --out RUN`: online SysDPO in rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.choices import PairingStrategy, RoundReference
from compound.commands.common import (
    AutoBeta,
    Batch,
    Beta,
    Lora,
    Nll,
    NodeBeta,
    Only,
    Rate,
    RateFor,
    ScorerOptions,
    Seed,
    TrustRemoteCode,
    choices,
    err,
    scorer_options,
    training,
)


def command(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system to align.")],
    inputs: Annotated[
        Path, typer.Option(help="Training inputs, JSONL: one object of input values per line.")
    ],
    out: Annotated[Path, typer.Option(help="The run folder: round-K/ per round, summary.jsonl and .png.")],
    scorer: Annotated[
        str | None, typer.Option(help="A scorer's name, or a TOML/YAML file declaring one (required).")
    ] = None,
    option: ScorerOptions = None,
    rounds: Annotated[
        int | None, typer.Option(help="Rounds of sample, score, pair, train (default 3).")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Samples per training input per round (default 4).")
    ] = None,
    eval_inputs: Annotated[
        Path | None, typer.Option("--eval", help="Held-out inputs, evaluated after every round.")
    ] = None,
    eval_samples: Annotated[int | None, typer.Option(help="Samples per held-out input (default 1).")] = None,
    pairing: Annotated[
        str | None, typer.Option(help=f"{choices(PairingStrategy)} (default best-worst).")
    ] = None,
    min_gap: Annotated[float | None, typer.Option(help="Smallest score gap that makes a pair.")] = None,
    min_chosen: Annotated[
        float | None, typer.Option(help="Smallest score of a pair's preferred sample.")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(help=f"{choices(RoundReference)}: the base system (default), or each round's start."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="A TOML or YAML file of these settings; its [train] table: training's."),
    ] = None,
    seed: Seed = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="LLM generation length when sampling.")] = None,
    temperature: Annotated[float | None, typer.Option(help="LLM sampling temperature.")] = None,
    denoising_steps: Annotated[
        int | None, typer.Option(help="Diffusion denoising steps when sampling.")
    ] = None,
    beta: Beta = None,
    nll: Nll = None,
    lr: Rate = None,
    lr_for: RateFor = None,
    batch_size: Batch = None,
    steps: Annotated[
        int | None, typer.Option(help="Training steps per round (default: --epochs over its pairs).")
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option(help="Passes over each round's pairs (default 1); scales with the pairs a round finds."),
    ] = None,
    lora: Lora = None,
    train_only: Only = None,
    node_beta: NodeBeta = None,
    auto_beta: AutoBeta = False,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps of a round.")] = None,
    text: Annotated[
        str | None, typer.Option(help="Optimize the text too, in text steps: gepa or bootstrap.")
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help="The steps, p text and w a round: 'p w p' (default with --text: p, the rounds, p)."
        ),
    ] = None,
    text_budget: Annotated[int | None, typer.Option(help="Each text step's budget (as optimize's).")] = None,
    reflection: Annotated[
        str | None, typer.Option(help="gepa text steps: the reflection LM: a component, a folder, a .gguf.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Finish the run in --out where it stopped.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Online SysDPO: rounds of sampling the current system, scoring, pairing and training, with held-out
    evaluation after each round (docs/training.md, "Online rounds")."""
    from compound.align import align, configure
    from compound.train import read_config

    settings = configure(
        read_config(config) if config else {},
        {
            "system": str(system),
            "inputs": str(inputs),
            "scorer": scorer,
            "rounds": rounds,
            "samples": samples,
            "eval": str(eval_inputs) if eval_inputs else None,
            "eval_samples": eval_samples,
            "pairing": pairing,
            "min_gap": min_gap,
            "min_chosen": min_chosen,
            "reference": reference,
            "seed": seed,
            "schedule": schedule,
        },
        training(
            lr_for=lr_for,
            lora_for=lora,
            node_beta=node_beta,
            beta=beta,
            nll=nll,
            learning_rate=lr,
            batch_size=batch_size,
            steps=steps,
            epochs=epochs,
            seed=seed,
            train=train_only,
            auto_beta=auto_beta,
            save_every=save_every,
        ),
        {"max_new_tokens": max_new_tokens, "temperature": temperature, "steps": denoising_steps},
        scorer_options(option),
        {"optimizer": text, "budget": text_budget, "reflection": reflection},
    )
    summary = align(settings, out, resume=resume, trust_remote_code=trust_remote_code)
    last = summary[-1]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if isinstance(v, float))
    unit = "step" if any("step" in r for r in summary) else "round"  # text steps count as steps
    err.print(f"done: {len(summary)} {unit}s; last {unit}: {shown}; curves in {out / 'summary.png'}")
