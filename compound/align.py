"""`compound align`: online SysDPO, in rounds, each from the current system.

Round K = 1 .. R:

1. **samples**: the current system (the base system in round 1, then round
   K-1's) runs `samples` times per training input, with the draws of
   (seed, K); the scorer scores every sample (`round-K/samples/`);
2. **pairs**: each input's samples become preference rows, `best-worst`,
   `all` or one `ranked` list (`round-K/pairs.jsonl`);
3. **training**: the configured steps on those rows, starting from the
   current weights (`round-K/train/`, an ordinary `compound train` run);
4. **evaluation** (with held-out inputs): the trained system runs them with the
   draws every round uses, and round 0, the base system, used; the mean score,
   and the win rate against round 0 on the same draws, a tie counting half
   (`round-K/eval/`, `compound.evaluation`).

With `text` (`--text gepa|bootstrap`), the system's text is optimized too, in
text steps between the rounds as `schedule` orders them ('p w p' by default:
a text step, the rounds, a text step, as BetterTogether alternates them). Text
step T (`text-T/`, an ordinary `compound optimize` run) starts from the current
text with the current weights and selects on the training inputs; the held-out
inputs only measure it (`text-T/eval/`), as they measure the rounds. The
rounds after it sample, train and evaluate with its text; `text.json` is the
last one.

`round-K/round.json` holds the round's numbers, `summary.jsonl` one line per
round, `summary.png` the curves (the layout: `compound.run_folder`).

The reference is the base system (`reference="initial"`): every round's
training starts from the last round's weights and scores against the base
models, so the KL anchor stays where alignment began. With `reference="round"`
each round's start is also its reference: the last round's trained components,
exported merged, become the base folders of the round's own `system.cmp`
(iterative DPO).

Every stage writes its outputs whole and is skipped when a resumed run
(`resume=True`) finds them; training resumes from its checkpoints. Since every
draw derives from the seed, a run killed at any point and resumed ends with
the weights and numbers of a run that was never interrupted.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from compound import samples as saved
from compound.choices import PairingStrategy, RoundReference
from compound.diagnostics import error
from compound.evaluation import evaluate, mean_score, win_rate
from compound.inputs import read_inputs
from compound.io import atomic_write, write_json, write_jsonl
from compound.loader import lora_options
from compound.model_folders import with_folders
from compound.optimize import TextStep
from compound.optimize.reflection import ReflectionLM
from compound.run_folder import AlignRun, Round, latest, locked, read_object
from compound.samples.pairing import pairs
from compound.samples.run import sample_inputs
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.seeds import splitmix
from compound.text import TEXT_FILE, Text
from compound.text import read as read_text
from compound.text import write as write_text
from compound.train import TrainConfig, Trainer
from compound.train.config import validated, with_overrides


class AlignConfig(BaseModel):
    """Everything an online run is configured by (stored in RUN/align.json)."""

    model_config = ConfigDict(extra="forbid")

    system: str
    inputs: str
    scorer: str
    scorer_options: dict[str, Any] = Field({}, description="the scorer's options")
    rounds: int = Field(3, ge=1)
    samples: int = Field(4, ge=2, description="samples per training input per round")
    eval: str | None = None
    eval_samples: int = Field(1, ge=1, description="samples per held-out input")
    pairing: PairingStrategy = "best-worst"
    min_gap: float = Field(0.0, ge=0)
    min_chosen: float | None = None
    reference: RoundReference = "initial"
    seed: int = 0
    batch: int = Field(8, ge=1, description="inputs per batched sampling call")
    decoding: dict[str, Any] = Field(
        {},
        description="sampling options, to every component that knows them: the [decoding] table "
        "(max_new_tokens, temperature, steps, ...), or --max-new-tokens, --temperature, --denoising-steps",
    )
    eval_decoding: dict[str, Any] | None = Field(
        None,
        description="the held-out samples' options in place of decoding's ({do_sample = false}: greedy, "
        "one sample per input); default: decoding's",
    )
    train: TrainConfig = Field(
        TrainConfig(), description="the training settings of every round (the [train] table)"
    )
    text: TextStep | None = Field(
        None, description="optimize the system's text too, in text steps (the [text] table, --text)"
    )
    schedule: str | None = Field(
        None,
        description="the steps in order, p a text step and w a SysDPO round: 'p w p' (BetterTogether's), "
        "'w p', 'p w w' ... (default with text: p, the rounds, p)",
    )

    def steps(self) -> list[str]:
        """The run's steps: "p" (text) and "w" (weights), in order."""
        if self.schedule is None:
            return ["p", *["w"] * self.rounds, "p"] if self.text is not None else ["w"] * self.rounds
        found = self.schedule.replace("->", " ").replace(",", " ").split()
        if any(step not in ("p", "w") for step in found) or found.count("w") != self.rounds:
            raise error(
                "config",
                f"schedule {self.schedule!r}: steps p (text) and w (a round), {self.rounds} w for --rounds "
                f"{self.rounds}",
            )
        if "p" in found and self.text is None:
            raise error("config", f"schedule {self.schedule!r} has text steps: give --text gepa|bootstrap")
        return found


def configure(
    settings: Mapping[str, Any],
    overrides: Mapping[str, Any],
    train: Mapping[str, Any],
    decoding: Mapping[str, Any],
    scorer_options: Mapping[str, Any],
    text: Mapping[str, Any] | None = None,
) -> AlignConfig:
    """An online run's settings: a config file's `settings` (its `train` table training's, its `decoding`
    table the sampling options, its `text` table the text steps'), with the `overrides`, `train`,
    `decoding` and `text` given on top (None: not given) and `scorer_options` added to the file's."""
    found = dict(settings)
    tables = {}
    for name in ("train", "decoding", "text"):
        table = found.pop(name, None) or {}
        if not isinstance(table, Mapping):
            raise error("config", f"invalid settings: {name} is a table of settings, not {table!r}")
        tables[name] = dict(table)
    trained = with_overrides(tables["train"], train)
    sampling = {
        **tables["decoding"],
        **{k: v for k, v in decoding.items() if v is not None},
    }
    found.update({k: v for k, v in overrides.items() if v is not None})
    found["scorer_options"] = {**found.get("scorer_options", {}), **scorer_options}
    if "scorer" not in found:
        raise error("config", "compound align needs a scorer: --scorer NAME or --scorer FILE.toml")
    steps = {**tables["text"], **{k: v for k, v in (text or {}).items() if v is not None}}
    settings = {**found, "decoding": sampling, "train": trained, "text": steps or None}
    config = validated(AlignConfig, settings)
    config.steps()  # a schedule that cannot run is refused before anything runs
    return config


def align(
    config: AlignConfig,
    out: str | Path,
    resume: bool = False,
    trust_remote_code: bool = False,
    scorer: Scorer | None = None,
    reflection: ReflectionLM | None = None,
) -> list[dict[str, Any]]:
    """Run (or, with `resume`, finish) the steps; return the summary, one dict per step. A `scorer`
    object (from Python) replaces the one `config.scorer` names, which then only labels the run;
    `reflection` is the text steps' reflection LM in place of the one `config.text` names."""
    folder = AlignRun(Path(out))
    steps = config.steps()
    # reads the inputs and makes the scorer: mistakes show now, before anything is written
    run = _Run(config, folder, trust_remote_code, scorer, reflection)
    with locked(folder.path, "compound align"):
        _settle(config, folder, resume)
        run.start()
        summary, rounds, texts = [], 0, 0
        for step, kind in enumerate(steps, 1):
            if kind == "w":
                rounds += 1
                found = run.round(folder.round(rounds))
            else:
                texts += 1
                found = run.text_step(texts)
            summary.append(
                {"step": step, "kind": "weights" if kind == "w" else "text", **found}
                if config.text
                else found
            )
        if run.text is not None:
            write_text(folder.path / TEXT_FILE, run.text)
        write_jsonl(folder.summary, summary)
        plot(summary, folder.path / "summary.png")
    return summary


def _settle(config: AlignConfig, folder: AlignRun, resume: bool) -> None:
    """Write RUN/align.json, or check that a resumed run was started with these settings."""
    if folder.exists():
        if not resume:
            raise error("config", f"{folder.path} holds a run already: --resume it, or choose another --out")
        if folder.settings() != json.loads(config.model_dump_json()):
            raise error(
                "config", f"--resume: {folder.path} was started with other settings ({folder.settings_file})"
            )
        return
    folder.path.mkdir(parents=True, exist_ok=True)
    write_json(folder.settings_file, json.loads(config.model_dump_json()))


class _Run:
    """One online run's stages, each skipped when its outputs exist."""

    def __init__(
        self,
        config: AlignConfig,
        folder: AlignRun,
        trust_remote_code: bool,
        scorer: Scorer | None,
        reflection: ReflectionLM | None = None,
    ):
        self.config, self.folder, self.trust, self.reflection = config, folder, trust_remote_code, reflection
        self.text: Text | None = None  # the text the system runs with (None: the .cmp file's)
        self.inputs = read_inputs(config.inputs)
        self.held = read_inputs(config.eval) if config.eval else None
        self.options = lora_options(config.train.lora)
        # loaded once for the whole run
        self.scorer = scorer if scorer is not None else find_scorer(config.scorer, **config.scorer_options)
        self.system: Path = Path(config.system)  # what the current round starts from
        self.weights: Path | None = None
        self.baseline: dict[str, float] | None = None

    def start(self) -> None:
        """Round 0: the base system on the held-out inputs, what every round is compared with."""
        if self.held is not None:
            self.baseline = self._scores(self.folder.round(0).eval, self.system, None)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def text_step(self, t: int) -> dict[str, Any]:
        """Text step t: the system's text optimized with its current weights, from its current text."""
        from compound.optimize import OptimizeConfig, optimize

        cfg, folder = self.config, self.folder.path / f"text-{t}"
        assert cfg.text is not None
        settings = OptimizeConfig(
            system=str(self.system),
            inputs=cfg.inputs,
            eval=None,  # selected on the training inputs: the held-out ones only measure, as for the weights
            scorer=cfg.scorer,
            scorer_options=cfg.scorer_options,
            seed=splitmix(cfg.seed, 0x7E47, t),
            weights=str(self.weights) if self.weights else None,
            batch=cfg.batch,
            **cfg.text.model_dump(),
        )
        summary_file = folder / "summary.json"
        if summary_file.is_file():
            found: dict[str, Any] = read_object(summary_file, "the text step's summary")
        else:
            self.say(f"text {t}: {cfg.text.optimizer}, a budget of {cfg.text.budget}")
            resume = (folder / "optimize.json").is_file()
            found = optimize(settings, folder, resume, self.reflection, self.scorer, self.trust, self.text)
        self.text = read_text(folder / "final" / TEXT_FILE)
        result: dict[str, Any] = {"text": t, "validation_score": found["best_score"]}
        if self.held is not None and self.baseline is not None:
            scores = self._scores(folder / "eval", self.system, self.weights)
            result.update(eval_mean_score=mean_score(scores), win_rate=win_rate(scores, self.baseline))
        return result

    def round(self, current: Round) -> dict[str, Any]:
        cfg, k = self.config, current.number
        if k > 1 and cfg.reference == "round":
            self.system, self.weights = self._rebase(current), None
        if current.finished():
            found = current.result()
            if current.train.finished():
                self.weights = current.train.final
            elif found.get("pairs"):
                raise error(
                    "config",
                    f"--resume: {current.path} trained on {found['pairs']} pairs, but its final weights "
                    f"({current.train.final}) are gone; delete {current.result_file} to train it again",
                )
            self._carry(current)
            return found
        where = f"round {k}/{cfg.rounds}"
        if not (current.samples / "samples.jsonl").is_file():
            self.say(f"{where}: sampling {len(self.inputs)} inputs x {cfg.samples}")
            sample_inputs(
                self.system,
                self.inputs,
                current.samples,
                n=cfg.samples,
                weights=self.weights,
                seed=splitmix(cfg.seed, k),
                scorer=self.scorer,
                batch=cfg.batch,
                decoding=cfg.decoding,
                quiet=not sys.stderr.isatty(),
                trust_remote_code=self.trust,
                options=self.options,
                text=self.text,
            )
        found_samples = saved.read(current.samples)
        if not current.pairs.is_file():
            made = pairs(found_samples, cfg.pairing, cfg.min_gap, current.path, cfg.min_chosen)
            write_jsonl(current.pairs, made.pairs)
        rows = current.pairs.read_text().splitlines()
        self.say(f"{where}: {len(rows)} {'ranked lists' if cfg.pairing == 'ranked' else 'pairs'}")
        result: dict[str, Any] = {
            "round": k,
            "pairs": len(rows),
            "train_mean_score": statistics.fmean(s.score or 0.0 for s in found_samples),
        }
        if rows:
            result.update(self._train(current, where))
        elif cfg.reference == "initial":  # nothing to learn from: the weights carry over
            self.say(f"{where}: no pairs (every input's samples scored alike); the weights carry over")
        if self.held is not None and self.baseline is not None:
            self.say(f"{where}: evaluating {len(self.held)} held-out inputs")
            found = self._scores(current.eval, self.system, self.weights)
            result.update(eval_mean_score=mean_score(found), win_rate=win_rate(found, self.baseline))
        write_json(current.result_file, result)
        return result

    def _train(self, current: Round, where: str) -> dict[str, Any]:
        run = current.train
        if not run.finished():
            resuming = bool(run.checkpoint_folders())
            if not resuming and run.path.exists():  # stopped before its first checkpoint: nothing to keep
                shutil.rmtree(run.path)
            trainer = Trainer(
                self.system,
                current.pairs,
                run.path,
                self.config.train.model_copy(
                    update={"quiet": self.config.train.quiet or not sys.stderr.isatty()}
                ),
                trust_remote_code=self.trust,
                weights=self.weights,
                text=self.text,
            )
            self.say(f"{where}: training {trainer.total_steps} steps" + (" (resumed)" if resuming else ""))
            trainer.train(resume=resuming)
        self.weights = run.final
        self._carry(current)
        last = run.metrics()[-1]
        return {"loss": last["loss"], "accuracy": last["rewards/accuracies"]}

    def _carry(self, current: Round) -> None:
        """With `reference="round"`: the round's trained components exported merged, the next base."""
        if self.config.reference != "round" or not current.train.finished():
            return
        from compound.export import export_once

        export_once(current.train.path, current.export, trust_remote_code=self.trust)

    def _rebase(self, current: Round) -> Path:
        """Round k's system.cmp: the original with each component trained so far at its latest export."""
        if not current.system.is_file():
            earlier = [self.folder.round(j) for j in range(1, current.number)]
            atomic_write(current.system, with_folders(self.config.system, latest(earlier)))
        return current.system

    def _scores(self, folder: Path, system: Path, weights: Path | None) -> dict[str, float]:
        """The held-out inputs run with the evaluation draws (their samples in `folder`), each sample's
        score."""
        assert self.held is not None
        cfg = self.config
        return evaluate(
            system,
            self.held,
            folder,
            self.scorer,
            cfg.seed,
            samples=cfg.eval_samples,
            batch=cfg.batch,
            decoding=cfg.decoding if cfg.eval_decoding is None else cfg.eval_decoding,
            weights=weights,
            options=self.options,
            trust_remote_code=self.trust,
            quiet=not sys.stderr.isatty(),
            text=self.text,
        )


def plot(summary: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The rounds' curves: the training samples' mean score, and the held-out mean score and win rate."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [r.get("step", r.get("round")) for r in summary]  # a run with text steps counts every step
    series = {
        "training samples: mean score": [r.get("train_mean_score") for r in summary],
        "held-out: mean score": [r.get("eval_mean_score") for r in summary],
        "held-out: win rate against round 0": [r.get("win_rate") for r in summary],
    }
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, values in series.items():
        points = [(x, v) for x, v in zip(steps, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set_xlabel("step" if any("step" in r for r in summary) else "round")
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
