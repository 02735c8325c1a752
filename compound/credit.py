"""`compound credit RUN --eval held.jsonl`: which component an alignment's gain comes from.

The held-out inputs run, with one set of draws, under the base system, the whole
trained system, and the trained system with each trained component in turn
reverted to its base model; every sample is scored (`compound.evaluation`).
Each variant's mean score and win rate against the base (a tie counting half)
say what each component adds: a gain that survives reverting the writer
belongs to the painter.

RUN is a `compound train` run (its `final/`; the scorer must be given) or a
`compound align` run (its last trained round; its scorer unless another is
given). The trained components are exported merged once (`RUN/credit/export/`),
and each variant is a `.cmp` file with the folders it takes
(`RUN/credit/<variant>/system.cmp`), next to its samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compound.align import AlignConfig
from compound.compiler import compile_file
from compound.diagnostics import error
from compound.evaluation import evaluate, mean_score, win_rate
from compound.inputs import read_inputs
from compound.io import atomic_write, write_json
from compound.model_folders import with_folders
from compound.run_folder import AlignRun, TrainRun, latest
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.train.config import validated


def trained_folders(
    run: Path, trust_remote_code: bool = False
) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """The run's original `.cmp` file, each trained component's merged folder, and the align settings
    (empty for a `compound train` run)."""
    from compound.export import export_once

    aligned = AlignRun(run)
    if aligned.exists():
        config = validated(AlignConfig, aligned.settings())
        rounds = aligned.trained()
        if not rounds:
            raise error("config", f"{run}: no round has trained yet")
        settings: dict[str, Any] = config.model_dump(mode="json")
        if config.reference == "round":  # every round's export: the latest of each component
            for r in rounds:
                export_once(r.train.path, r.export, trust_remote_code)
            return Path(config.system), latest(rounds), settings
        last, system = rounds[-1].train, Path(config.system)
    elif TrainRun(run).finished():
        last, settings = TrainRun(run), {}
        system = Path(last.weights().system)
    else:
        raise error("config", f"{run} is neither a finished `compound train` run nor a `compound align` run")
    return system, export_once(last.path, run / "credit" / "export", trust_remote_code), settings


def credit(
    run: str | Path,
    eval_inputs: str | Path,
    scorer: str | Scorer | None = None,
    scorer_options: Mapping[str, Any] | None = None,
    eval_samples: int | None = None,
    trust_remote_code: bool = False,
) -> list[dict[str, Any]]:
    """Score every variant on the held-out inputs; write RUN/credit/credit.json and CREDIT.md. `scorer`
    is a name or file, or (from Python) a scorer object, as `compound.align.align` takes."""
    run = Path(run)
    system, found, settings = trained_folders(run, trust_remote_code)
    order = [c.name for c in compile_file(system).components]
    folders = {name: found[name] for name in order if name in found}
    if scorer is None:
        if not settings:
            raise error("config", "give --scorer: a `compound train` run does not record one")
        scorer, scorer_options = settings["scorer"], {**settings["scorer_options"], **(scorer_options or {})}
    held = read_inputs(eval_inputs)
    score = find_scorer(scorer, **dict(scorer_options or {})) if isinstance(scorer, str) else scorer
    variants: dict[str, dict[str, Path]] = {"base": {}, "trained": dict(folders)}
    for name in folders:
        variants[f"trained, {name} reverted"] = {k: v for k, v in folders.items() if k != name}
    scores: dict[str, dict[str, float]] = {}
    for variant, chosen in variants.items():
        folder = run / "credit" / variant.replace(", ", "-").replace(" ", "-")
        if not (folder / "system.cmp").is_file():
            atomic_write(folder / "system.cmp", with_folders(system, chosen))
        scores[variant] = evaluate(
            folder / "system.cmp",
            held,
            folder,
            score,
            settings.get("seed", 0),
            samples=eval_samples or settings.get("eval_samples", 1),
            batch=settings.get("batch", 8),
            decoding=settings.get("decoding", {}),
            trust_remote_code=trust_remote_code,
        )
    table = [
        {"system": variant, "mean_score": mean_score(found), "win_rate": win_rate(found, scores["base"])}
        for variant, found in scores.items()
    ]
    write_json(run / "credit" / "credit.json", table)
    atomic_write(run / "credit" / "CREDIT.md", markdown(table))
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """The credit table as markdown."""
    lines = [
        "| system | held-out mean score | win rate against the base |",
        "|---|---|---|",
        *(f"| {r['system']} | {r['mean_score']:.3f} | {r['win_rate']:.3f} |" for r in table),
    ]
    return "\n".join(lines) + "\n"
