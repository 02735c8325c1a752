"""`compound optimize SYSTEM --inputs FILE --scorer SPEC --optimizer gepa|bootstrap --out RUN`: the
system's text (params, demonstrations) optimized on its own runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import ScorerOptions, Seed, TrustRemoteCode, err, scorer_options


def command(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system whose text to optimize.")],
    inputs: Annotated[
        Path, typer.Option(help="Training inputs, JSONL: one object of input values per line.")
    ],
    out: Annotated[Path, typer.Option(help="The run folder: rollouts, candidates, final/text.json.")],
    scorer: Annotated[
        str | None, typer.Option(help="A scorer's name, or a TOML/YAML file declaring one (required).")
    ] = None,
    option: ScorerOptions = None,
    eval_inputs: Annotated[
        Path | None, typer.Option("--eval", help="Validation inputs (default: the training inputs).")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="gepa (params, by reflection) or bootstrap (demonstrations).")
    ] = None,
    budget: Annotated[
        int | None, typer.Option(help="gepa: rollouts in all (default 200); bootstrap: candidate sets.")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Trained weights to run with, e.g. RUN/final.")] = None,
    reflection: Annotated[
        str | None,
        typer.Option(help="gepa: the reflection LM: a component, a causal-LM folder, a .gguf file."),
    ] = None,
    reflection_tokens: Annotated[int | None, typer.Option(help="gepa: the reflection's length.")] = None,
    minibatch: Annotated[int | None, typer.Option(help="gepa: training examples per reflection.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="bootstrap: the score a trace needs to give demonstrations.")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="LLM generation length of each rollout.")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML or YAML file of these settings.")] = None,
    seed: Seed = None,
    resume: Annotated[bool, typer.Option(help="Finish the run in --out where it stopped.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Optimize SYSTEM's params with GEPA, or its nodes' demonstrations by bootstrapping, on its own runs
    scored by the scorer; the chosen text in RUN/final/text.json (`compound.load(cmp, weights=RUN/final)`)."""
    from compound.io import read_table
    from compound.optimize import OptimizeConfig, optimize
    from compound.train.config import validated

    settings = read_table(config, "config file") if config else {}
    flags = {
        "system": str(system),
        "inputs": str(inputs),
        "eval": str(eval_inputs) if eval_inputs else None,
        "scorer": scorer,
        "optimizer": optimizer,
        "budget": budget,
        "weights": str(weights) if weights else None,
        "reflection": reflection,
        "reflection_tokens": reflection_tokens,
        "minibatch": minibatch,
        "threshold": threshold,
        "seed": seed,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings["scorer_options"] = {**settings.get("scorer_options", {}), **scorer_options(option)}
    if max_new_tokens is not None:
        settings["decoding"] = {
            **settings.get("decoding", {"do_sample": False}),
            "max_new_tokens": max_new_tokens,
        }
    if "scorer" not in settings:
        from compound.diagnostics import error

        raise error("config", "compound optimize needs a scorer: --scorer NAME or --scorer FILE.toml")
    summary = optimize(
        validated(OptimizeConfig, settings), out, resume=resume, trust_remote_code=trust_remote_code
    )
    err.print(
        f"done: {summary['candidates']} candidates, {summary['rollouts']} rollouts; validation score "
        f"{summary['seed_score']:.3f} -> {summary['best_score']:.3f}; text in {out / 'final' / 'text.json'}"
    )
