"""`compound optimize`: the text of a system (its params and its nodes' demonstrations) optimized on its
own runs, by GEPA (`optimize.gepa`) or by bootstrapped demonstrations (`optimize.bootstrap`).

The run folder holds what a user needs to see and a resumed run needs to go on:

    optimize.json       the settings
    evaluations.jsonl   every rollout (a text on an example; a batch of them a line): the row,
                        each node's prompt and value, the score and the scorer's feedback
    reflections.jsonl   every call of GEPA's reflection LM, prompt and answer
    candidates.jsonl    every candidate text kept, with its validation score
    final/text.json     the chosen text (`compound.load(cmp, weights=RUN/final)` loads it)
    summary.json        the seed's and the chosen text's validation scores, the budget spent

The search is deterministic (GEPA's draws from the seed, each rollout from
(seed, example), greedy decoding unless decoding says otherwise), so a run
killed at any point and resumed (`resume=True`) replays its rollouts and
reflections from the folder and ends with the text an uninterrupted run ends
with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compound.diagnostics import error
from compound.inputs import read_inputs
from compound.io import atomic_folder, write_checksums, write_json, write_jsonl
from compound.loader import load
from compound.optimize.evaluate import Rollouts
from compound.optimize.reflection import ReflectionLM, Replayed, reflection_lm
from compound.progress import Mode, Progress
from compound.run_folder import OptimizeRun, locked, read_object
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.text import TEXT_FILE, Text, current
from compound.text import write as write_text
from compound.train.config import Whole

Optimizer = Literal["gepa", "bootstrap"]


class TextStep(BaseModel):
    """How a system's text is optimized: by which optimizer, on what budget (a text step of `compound
    align --text` takes these too)."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Optimizer = "gepa"
    budget: Whole = Field(
        200, ge=1, description="gepa: rollouts (metric calls) in all; bootstrap: candidate sets tried"
    )
    decoding: dict[str, Any] = Field(
        {"do_sample": False}, description="sampling options of every rollout (default: greedy)"
    )
    minibatch: Whole = Field(3, ge=1, description="gepa: training examples a reflection reads")
    reflection: str | None = Field(
        None, description="gepa: a component's name, a causal-LM folder or a .gguf file"
    )
    reflection_tokens: Whole = Field(256, ge=1, description="gepa: the reflection LM's answer, at most")
    threshold: float = Field(1.0, description="bootstrap: the score a trace needs to give demonstrations")


class OptimizeConfig(TextStep):
    """Everything an optimization run is configured by (stored in RUN/optimize.json)."""

    system: str
    inputs: str = Field(description="training inputs: GEPA's minibatches, bootstrap's traces")
    eval: str | None = Field(None, description="validation inputs (default: the training inputs)")
    scorer: str
    scorer_options: dict[str, Any] = Field({}, description="the scorer's options")
    seed: Whole = 0
    weights: str | None = Field(None, description="trained weights to run with (RUN/final)")
    batch: Whole = Field(8, ge=1, description="examples per batched call when decoding is greedy")


def optimize(
    config: OptimizeConfig,
    out: str | Path,
    resume: bool = False,
    reflection: ReflectionLM | None = None,
    scorer: Scorer | None = None,
    trust_remote_code: bool = False,
    text: Text | None = None,
) -> dict[str, Any]:
    """Run (or, with `resume`, finish) the search; the summary. `reflection` (from Python) is the
    reflection LM in place of the one `config.reflection` names; `scorer` replaces `config.scorer`'s;
    `text` is where the search starts (default: the `.cmp` file's, or the weights folder's)."""
    run = OptimizeRun(Path(out))
    train = {f"train:{k}": row for k, row in enumerate(read_inputs(config.inputs))}
    val = {f"val:{k}": row for k, row in enumerate(read_inputs(config.eval))} if config.eval else {}
    score = scorer if scorer is not None else find_scorer(config.scorer, **config.scorer_options)
    with locked(run.path, "compound optimize"):
        _settle(config, run, resume)
        model = load(config.system, weights=config.weights, trust_remote_code=trust_remote_code, text=text)
        system = model.system
        if config.optimizer == "gepa" and not system.params:
            raise error(
                "config", f"{config.system} declares no param: GEPA optimizes params (`param NAME = ...`)"
            )
        base = current(system)
        mode: Mode = "lines" if not sys.stderr.isatty() else "bar"
        validation = list(val) or list(train)
        # gepa: its budget of rollouts; bootstrap: the traces, then each candidate set's validation at most
        total = config.budget if config.optimizer == "gepa" else len(train) + config.budget * len(validation)
        with Progress(f"optimize ({config.optimizer})", total, 0, mode) as progress:
            counted = [0]

            def step(n: int) -> None:
                counted[0] += n
                progress.update(min(counted[0], total), f"{counted[0]} rollouts")

            rollouts = Rollouts(
                model,
                {**train, **val},
                score,
                config.seed,
                config.decoding,
                run.evaluations,
                config.batch,
                step,
            )
            counted[0] = len(rollouts.done)  # a resumed run's rollouts read back count as done
            if config.optimizer == "gepa":
                kept = _gepa(
                    config, run, model, rollouts, base, list(train), validation, reflection, trust_remote_code
                )
            else:
                from compound.optimize import bootstrap

                kept = bootstrap.search(
                    system,
                    rollouts,
                    base,
                    list(train),
                    validation,
                    config.budget,
                    config.threshold,
                    config.seed,
                )
        best = max(range(len(kept)), key=lambda k: (kept[k]["score"], -k))
        chosen: Text = kept[best]["text"]
        write_jsonl(run.candidates, [{"id": k, **c, "text": c["text"].to_json()} for k, c in enumerate(kept)])
        summary = {
            "optimizer": config.optimizer,
            "seed_score": kept[0]["score"],
            "best_score": kept[best]["score"],
            "best": best,
            "candidates": len(kept),
            "rollouts": len(rollouts.done),
        }
        with atomic_folder(run.final) as final:
            write_text(final / TEXT_FILE, chosen)
            write_checksums(final)
        write_json(run.summary, summary)
    return summary


def _gepa(
    config: OptimizeConfig,
    run: OptimizeRun,
    model: Any,
    rollouts: Rollouts,
    base: Text,
    train: list[str],
    val: list[str],
    reflection: ReflectionLM | None,
    trust_remote_code: bool,
) -> list[dict[str, Any]]:
    from compound.optimize import gepa

    if reflection is None:
        if config.reflection is None:
            raise error("config", "GEPA needs a reflection LM: --reflection COMPONENT or --reflection FOLDER")
        reflection = reflection_lm(
            config.reflection, model, config.reflection_tokens, trust_remote_code=trust_remote_code
        )
    adapter = gepa.Adapter(model.system, rollouts, base)
    found = gepa.search(
        adapter,
        base,
        train,
        val,
        Replayed(reflection, run.reflections),
        config.budget,
        config.seed,
        config.minibatch,
        run.path / "gepa.log",
    )
    return [{"text": adapter.text(c["params"]), "score": c["score"], "parents": c["parents"]} for c in found]


def _settle(config: OptimizeConfig, run: OptimizeRun, resume: bool) -> None:
    """Write RUN/optimize.json, or check that a resumed run was started with these settings."""
    stored = json.loads(config.model_dump_json())
    if run.settings_file.is_file():
        if not resume:
            raise error("config", f"{run.path} holds a run already: --resume it, or choose another --out")
        if read_object(run.settings_file, "the run's settings") != stored:
            raise error(
                "config", f"--resume: {run.path} was started with other settings ({run.settings_file})"
            )
        return
    write_json(run.settings_file, stored)
