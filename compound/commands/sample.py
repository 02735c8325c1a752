"""`compound sample SYSTEM --inputs FILE --out DIR`: run a system over inputs; rows, images, a contact
sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from compound.commands.common import ScorerOptions, TrustRemoteCode, err, scorer_options


def command(
    system: Annotated[Path, typer.Argument(help="The .cmp file of the system to run.")],
    inputs: Annotated[Path, typer.Option(help="JSONL: one object of input values per line.")],
    out: Annotated[
        Path, typer.Option(help="Folder for samples.jsonl, images/, contact.png and contact.html.")
    ],
    n: Annotated[int, typer.Option(help="Samples per input.")] = 1,
    weights: Annotated[Path | None, typer.Option(help="Trained weights, e.g. RUN/final.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    best_of: Annotated[
        int | None, typer.Option(help="Sample N per input and keep the best (needs --scorer).")
    ] = None,
    scorer: Annotated[
        str | None, typer.Option(help="Score the samples (progression, exact_match, ...).")
    ] = None,
    option: ScorerOptions = None,
    temperature: Annotated[float | None, typer.Option(help="LLM sampling temperature.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="LLM generation length.")] = None,
    steps: Annotated[int | None, typer.Option(help="Diffusion denoising steps.")] = None,
    batch: Annotated[int, typer.Option(help="Inputs per batched call.")] = 8,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Run SYSTEM N times per input; write the rows, their images and a contact sheet (multi-process with
    `accelerate launch`: each process a share of the inputs, one merged output)."""
    from compound.inputs import read_inputs
    from compound.samples.run import sample_inputs

    decoding = {
        k: v
        for k, v in {"temperature": temperature, "max_new_tokens": max_new_tokens, "steps": steps}.items()
        if v is not None
    }
    written = sample_inputs(
        system,
        read_inputs(inputs),
        out,
        n=best_of or n,
        weights=weights,
        seed=seed,
        scorer=(scorer, scorer_options(option)) if scorer else None,
        best=best_of is not None,
        batch=batch,
        decoding=decoding,
        trust_remote_code=trust_remote_code,
    )
    if written is not None:
        err.print(f"wrote {written} ({out / 'contact.png'}, {out / 'contact.html'})")
