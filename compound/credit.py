"""`compound credit RUN --eval held.jsonl`: which component an alignment's gain comes from.

The held-out inputs run, with one set of draws, under the base system, the whole
trained system, and the trained system with each trained component in turn
reverted to its base model; every sample is scored (`compound.evaluation`).
Each variant's mean score and win rate against the base (a tie counting half)
say what each component adds: a gain that survives reverting the writer
belongs to the painter.

A run that optimized text (params, demonstrations) has a variant per param
reverted to its seed value and per node with its demonstrations taken away, as
a component is reverted to its base model: which text carries the gain.

RUN is a `compound train` run (its `final/`; the scorer must be given), a
`compound align` run (its last trained round and its text; its scorer unless
another is given) or a `compound optimize` run. The trained components are
exported merged once (`RUN/credit/export/`), and each variant is a `.cmp` file
with the folders it takes (`RUN/credit/<variant>/system.cmp`), next to its
samples.
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
from compound.run_folder import AlignRun, OptimizeRun, TrainRun, latest, read_object
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.text import TEXT_FILE, Text, seed
from compound.text import read as read_text
from compound.train.config import validated


def trained_folders(
    run: Path, trust_remote_code: bool = False
) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """The run's original `.cmp` file, each trained component's merged folder, and the align settings
    (empty for a `compound train` run)."""
    from compound.export import export_once

    aligned, optimized = AlignRun(run), OptimizeRun(run)
    if optimized.exists():  # the text optimized, with the weights it ran with (if it was given some)
        given = read_object(optimized.settings_file, "the run's settings")
        weights = given.get("weights")
        folders = (
            export_once(Path(weights).parent, run / "credit" / "export", trust_remote_code) if weights else {}
        )
        return Path(str(given["system"])), folders, given
    if aligned.exists():
        config = validated(AlignConfig, aligned.settings())
        rounds = aligned.trained()
        settings: dict[str, Any] = config.model_dump(mode="json")
        if not rounds and (run / TEXT_FILE).is_file():  # no round found pairs: the text alone
            return Path(config.system), {}, settings
        if not rounds:
            raise error("config", f"{run}: no round has trained yet")
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
    text = trained_text(run)
    variants: dict[str, tuple[dict[str, Path], Text | None]] = {
        "base": ({}, None),
        "trained": (dict(folders), text),
    }
    for name in folders:
        variants[f"trained, {name} reverted"] = ({k: v for k, v in folders.items() if k != name}, text)
    if text is not None:
        seeded = seed(compile_file(system))
        for name in [p for p, value in text.params.items() if value != seeded.params.get(p)]:
            reverted = Text({**text.params, name: seeded.params[name]}, dict(text.demos))
            variants[f"trained, param {name} reverted"] = (dict(folders), reverted)
        for base in text.demos:
            demos = {k: v for k, v in text.demos.items() if k != base}
            variants[f"trained, demos of {base} reverted"] = (dict(folders), Text(dict(text.params), demos))
    scores: dict[str, dict[str, float]] = {}
    for variant, (chosen, given) in variants.items():
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
            decoding=settings.get("decoding", {})
            if settings.get("eval_decoding") is None
            else settings["eval_decoding"],
            trust_remote_code=trust_remote_code,
            text=given,
        )
    table = [
        {"system": variant, "mean_score": mean_score(found), "win_rate": win_rate(found, scores["base"])}
        for variant, found in scores.items()
    ]
    write_json(run / "credit" / "credit.json", table)
    atomic_write(run / "credit" / "CREDIT.md", markdown(table))
    return table


def trained_text(run: Path) -> Text | None:
    """The text a run ended with (an optimize run's, an align run's last, a train run's), if any."""
    aligned, optimized = AlignRun(run), OptimizeRun(run)
    if optimized.exists():
        return read_text(optimized.final / TEXT_FILE)
    if aligned.exists() and (run / TEXT_FILE).is_file():
        return read_text(run / TEXT_FILE)
    finals = [r.train.final for r in aligned.trained()] if aligned.exists() else [TrainRun(run).final]
    last = finals[-1] / TEXT_FILE if finals else None
    return read_text(last) if last is not None and last.is_file() else None


def markdown(table: list[dict[str, Any]]) -> str:
    """The credit table as markdown."""
    lines = [
        "| system | held-out mean score | win rate against the base |",
        "|---|---|---|",
        *(f"| {r['system']} | {r['mean_score']:.3f} | {r['win_rate']:.3f} |" for r in table),
    ]
    return "\n".join(lines) + "\n"
