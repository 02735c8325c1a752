"""`compound credit RUN --eval held.jsonl`: which component an alignment's gain comes from.

The held-out inputs run, with one set of draws, under the base system, the whole
trained system, and the trained system with each trained component in turn
reverted to its base model; every sample is scored. Each variant's mean score
and win rate against the base (a tie counting half) say what each component
adds: a gain that survives reverting the writer belongs to the painter.

RUN is a `compound train` run (its `final/`; the scorer must be given) or a
`compound align` run (its last trained round; its scorer unless another is
given). The trained components are exported merged once (`RUN/credit/export/`),
and each variant is a `.cmp` file with the folders it takes
(`RUN/credit/<variant>/system.cmp`), next to its samples.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compound import samples as saved
from compound.align import EVAL_STREAM, AlignConfig, read_inputs, win_rate
from compound.compiler import compile_file
from compound.diagnostics import error
from compound.io import atomic_write, write_json
from compound.rewrite import with_folders
from compound.sample_files import sample_inputs
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.seeds import splitmix
from compound.train.checkpoint import RUN_FILE


def trained_folders(
    run: Path, trust_remote_code: bool = False
) -> tuple[Path, dict[str, Path], dict[str, Any]]:
    """The run's original `.cmp` file, each trained component's merged folder, and the align settings
    (empty for a `compound train` run)."""
    from compound.export import export

    target = run / "credit" / "export"
    if (run / "align.json").is_file():
        config = AlignConfig(**json.loads((run / "align.json").read_text()))
        rounds = sorted(
            (int(p.name.split("-")[1]), p)
            for p in run.glob("round-*")
            if (p / "train" / "final" / RUN_FILE).is_file()
        )
        if not rounds:
            raise error("config", f"{run}: no round has trained yet")
        folders: dict[str, Path] = {}
        if config.reference == "round":  # every round's export: the latest of each component
            for _, folder in rounds:
                folders.update({p.name: p for p in (folder / "export").iterdir() if p.is_dir()})
            return Path(config.system), folders, json.loads(config.model_dump_json())
        last = rounds[-1][1] / "train"
        settings: dict[str, Any] = json.loads(config.model_dump_json())
        system = Path(config.system)
    elif (run / "final" / RUN_FILE).is_file():
        last, settings = run, {}
        system = Path(json.loads((run / "final" / RUN_FILE).read_text())["system"])
    else:
        raise error("config", f"{run} is neither a finished `compound train` run nor a `compound align` run")
    if not (target / "done").is_file():
        export(last, target, trust_remote_code=trust_remote_code)
        (target / "done").write_text("")
    return system, {p.name: p for p in target.iterdir() if p.is_dir()}, settings


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
    samples = eval_samples or settings.get("eval_samples", 1)
    seed = settings.get("seed", 0)
    variants: dict[str, dict[str, Path]] = {"base": {}, "trained": dict(folders)}
    for name in folders:
        variants[f"trained, {name} reverted"] = {k: v for k, v in folders.items() if k != name}
    scores: dict[str, dict[str, float]] = {}
    for variant, chosen in variants.items():
        folder = run / "credit" / variant.replace(", ", "-").replace(" ", "-")
        if not (folder / "samples.jsonl").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / "system.cmp", with_folders(system, chosen))
            sample_inputs(
                folder / "system.cmp",
                held,
                folder,
                n=samples,
                seed=splitmix(seed, EVAL_STREAM),
                scorer=score,
                batch=settings.get("batch", 8),
                decoding=settings.get("decoding", {}),
                quiet=True,
                trust_remote_code=trust_remote_code,
            )
        scores[variant] = {s.id: s.score or 0.0 for s in saved.read(folder)}
    table = [
        {
            "system": variant,
            "mean_score": statistics.fmean(found.values()),
            "win_rate": win_rate(found, scores["base"]),
        }
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
