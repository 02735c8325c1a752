"""`compound train SYSTEM --data prefs.jsonl --out RUN`: SysDPO on preference data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from compound.choices import LossType, MixedPrecision, Reference, Schedule
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
    Seed,
    TrustRemoteCode,
    choices,
    err,
    report,
    training,
)

#: Invalid rows `--skip-invalid` lists by number and reason (the rest are counted).
SHOWN = 20


def command(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system to align.")],
    data: Annotated[
        str, typer.Option(help="Preference data: JSONL, Parquet, CSV, JSON, a datasets folder or hub id.")
    ],
    out: Annotated[Path, typer.Option(help="The run folder (metrics, checkpoints, final weights).")],
    config: Annotated[Path | None, typer.Option(help="A TOML or YAML file of training settings.")] = None,
    eval_data: Annotated[
        str | None, typer.Option("--eval", help="Held-out pairs, evaluated every --eval-every steps.")
    ] = None,
    beta: Beta = None,
    loss: Annotated[str | None, typer.Option(help=f"{choices(LossType)} (default sigmoid).")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="For the robust loss.")] = None,
    nll: Nll = None,
    lr: Rate = None,
    lr_for: RateFor = None,
    batch_size: Batch = None,
    grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step.")] = None,
    steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (default: --epochs over the data).")
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data (default 1).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up steps.")] = None,
    schedule: Annotated[str | None, typer.Option(help=f"{choices(Schedule)}.")] = None,
    seed: Seed = None,
    mixed_precision: Annotated[str | None, typer.Option(help=f"{choices(MixedPrecision)}.")] = None,
    reference: Annotated[
        list[str] | None, typer.Option(help=f"{choices(Reference)}; or NAME=STRATEGY.")
    ] = None,
    lora: Lora = None,
    train_only: Only = None,
    node_weight: Annotated[
        list[str] | None, typer.Option(help="Per node: NODE=WEIGHT in the loss (image= for every instance).")
    ] = None,
    node_beta: NodeBeta = None,
    auto_beta: AutoBeta = False,
    save_every: Annotated[
        int | None, typer.Option(help="Checkpoint every N steps (0: only at the end).")
    ] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate --eval every N steps.")] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="Leave invalid rows out (reported and counted).")
    ] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(help="Log lines instead of a progress bar.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Align every trainable component of SYSTEM jointly with SysDPO on preference DATA."""
    from compound.train import Trainer, read_config
    from compound.train.config import with_overrides

    settings = with_overrides(
        read_config(config) if config else {},
        training(
            lr_for=lr_for,
            lora_for=lora,
            node_weight=node_weight,
            node_beta=node_beta,
            reference_for=reference,
            beta=beta,
            loss_type=loss,
            label_smoothing=label_smoothing,
            nll=nll,
            learning_rate=lr,
            batch_size=batch_size,
            gradient_accumulation=grad_accum,
            steps=steps,
            epochs=epochs,
            warmup=warmup,
            schedule=schedule,
            seed=seed,
            mixed_precision=mixed_precision,
            save_every=save_every,
            eval_every=eval_every,
            train=train_only,
            auto_beta=auto_beta,
            skip_invalid=skip_invalid,
            quiet=quiet,
        ),
    )
    trainer = Trainer(system, data, out, settings, eval_data=eval_data, trust_remote_code=trust_remote_code)
    report(trainer.data.warnings + (trainer.eval_data.warnings if trainer.eval_data else []), {})
    left_out = [d for data in (trainer.data, trainer.eval_data) if data for d in data.invalid]
    report([replace(d, severity="warning", message=f"left out: {d.message}") for d in left_out[:SHOWN]], {})
    if len(left_out) > SHOWN:
        err.print(f"... and {len(left_out) - SHOWN} more invalid rows left out")
    pairs = trainer.data.pairs
    err.print(
        f"training {', '.join(trainer.trained)} of {system} on {len(pairs)} pairs "
        f"({len(pairs) - trainer.sampling} Direct, {trainer.sampling} Sampling)"
        + (f"; {len(trainer.data.invalid)} invalid rows left out" if trainer.data.invalid else "")
        + f": {trainer.total_steps} steps of {trainer.global_batch} pairs"
        + (
            "; node betas " + ", ".join(f"{n} {b:.3g}" for n, b in trainer.node_betas.items())
            if trainer.node_betas
            else ""
        )
    )
    last = trainer.train(resume=resume)
    err.print(
        f"done: loss {last['loss']:.4f}, accuracy {last['rewards/accuracies']:.3f}; "
        f"weights in {out / 'final'}"
    )
