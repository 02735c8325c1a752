"""`compound sample`: run a system over a file of inputs, on one process or many.

Inputs are taken in batches; batch b of the inputs is sampled with a generator
seeded from (seed, b), so a run is reproducible. Under `accelerate launch` each
process takes every N-th batch and writes its own file; the main process merges
them into one samples.jsonl (in input order) and draws the contact sheet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from compound import samples as saved
from compound.devices import accelerated
from compound.loader import load
from compound.samples.contact import contact_sheet
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.seeds import splitmix
from compound.text import Text


def sample_inputs(
    system_path: str | Path,
    inputs: Sequence[Mapping[str, Any]],
    out: str | Path,
    n: int = 1,
    weights: str | Path | None = None,
    seed: int = 0,
    scorer: Scorer | tuple[str, Mapping[str, Any]] | None = None,
    best: bool = False,
    batch: int = 8,
    decoding: Mapping[str, Any] | None = None,
    quiet: bool = False,
    trust_remote_code: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    text: Text | None = None,
) -> Path | None:
    """Sample n rows per input; with `best`, keep each input's best by `scorer` (a scorer, or a name and
    options to make one). Returns samples.jsonl's path (None on processes other than the main one)."""
    from accelerate import PartialState
    from rich.progress import Progress

    state = PartialState(cpu=not accelerated())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load(
        system_path, weights=weights, options=options, trust_remote_code=trust_remote_code, text=text
    )
    model = model.to(state.device)
    score = find_scorer(scorer[0], **scorer[1]) if isinstance(scorer, tuple) else scorer
    starts = list(range(0, len(inputs), batch))[state.process_index :: state.num_processes]
    found: list[saved.Sample] = []
    show = state.is_main_process and not quiet
    with Progress(disable=not show) as progress:
        task = progress.add_task("sampling", total=len(starts))
        for start in starts:
            given = inputs[start : start + batch]
            rows = model.sample(
                given, n=n, generator=torch.Generator().manual_seed(splitmix(seed, start)), **(decoding or {})
            )
            part = saved.split(model.system, given, rows, n, first=start)
            if score is not None:
                saved.score(part, score)
            found += saved.best_of(part) if best else part
            progress.advance(task)
    saved.write(found, out, f"samples-{state.process_index}.jsonl")
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    merged = [s for rank in range(state.num_processes) for s in saved.read(out, f"samples-{rank}.jsonl")]
    merged.sort(key=lambda s: tuple(int(part) for part in s.id.split("-")))
    path = saved.write(merged, out)
    for rank in range(state.num_processes):
        (out / f"samples-{rank}.jsonl").unlink()
    contact_sheet(merged, out)
    return path
