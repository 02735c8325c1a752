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
   (`round-K/eval/`).

`round-K/round.json` holds the round's numbers, `summary.jsonl` one line per
round, `summary.png` the curves.

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
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compound import samples as saved
from compound.diagnostics import error
from compound.io import atomic_write, write_json
from compound.pairing import pairs
from compound.rewrite import with_folders
from compound.sample_files import sample_inputs
from compound.scorers import Scorer
from compound.scorers import scorer as find_scorer
from compound.seeds import splitmix
from compound.train import TrainConfig, Trainer
from compound.train.checkpoint import RUN_FILE

#: The seed stream of the held-out evaluation: the same draws in every round.
EVAL_STREAM = 7_777


class AlignConfig(BaseModel):
    """Everything an online run is configured by (stored in RUN/align.json)."""

    model_config = ConfigDict(extra="forbid")

    system: str
    inputs: str
    scorer: str
    scorer_options: dict[str, Any] = {}
    rounds: int = Field(3, ge=1)
    samples: int = Field(4, ge=2, description="samples per training input per round")
    eval: str | None = None
    eval_samples: int = Field(1, ge=1, description="samples per held-out input")
    pairing: Literal["best-worst", "all", "ranked"] = "best-worst"
    min_gap: float = Field(0.0, ge=0)
    min_chosen: float | None = None
    reference: Literal["initial", "round"] = "initial"
    seed: int = 0
    batch: int = Field(8, ge=1, description="inputs per batched sampling call")
    decoding: dict[str, Any] = {}
    train: TrainConfig = TrainConfig()


def read_inputs(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an inputs file: one JSON object of input values per line."""
    from compound.io import read_jsonl

    rows = []
    for line in read_jsonl(Path(path)):
        if line.problem is not None or not isinstance(line.value, dict):
            raise error("row", f"{path} row {line.number} is not an object of input values")
        rows.append(line.value)
    if not rows:
        raise error("row", f"{path} holds no inputs")
    return rows


def align(
    config: AlignConfig,
    out: str | Path,
    resume: bool = False,
    trust_remote_code: bool = False,
    scorer: Scorer | None = None,
) -> list[dict[str, Any]]:
    """Run (or, with `resume`, finish) the rounds; return the summary, one dict per round. A `scorer`
    object (from Python) replaces the one `config.scorer` names, which then only labels the run."""
    out = Path(out)
    # reads the inputs and makes the scorer: mistakes show now, before anything is written
    run = _Run(config, out, trust_remote_code, scorer)
    _settle(config, out, resume)
    run.start()
    summary = [run.round(k) for k in range(1, config.rounds + 1)]
    atomic_write(out / "summary.jsonl", "".join(json.dumps(r) + "\n" for r in summary))
    plot(summary, out / "summary.png")
    return summary


def _settle(config: AlignConfig, out: Path, resume: bool) -> None:
    """Write RUN/align.json, or check that a resumed run was started with these settings."""
    stored = out / "align.json"
    if stored.is_file():
        if not resume:
            raise error("config", f"{out} holds a run already: --resume it, or choose another --out")
        if json.loads(stored.read_text()) != json.loads(config.model_dump_json()):
            raise error("config", f"--resume: {out} was started with other settings ({stored})")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(stored, json.loads(config.model_dump_json()))


class _Run:
    """One online run's stages, each skipped when its outputs exist."""

    def __init__(self, config: AlignConfig, out: Path, trust_remote_code: bool, scorer: Scorer | None):
        self.config, self.out, self.trust = config, out, trust_remote_code
        self.inputs = read_inputs(config.inputs)
        self.held = read_inputs(config.eval) if config.eval else None
        self.options = {name: {"lora": spec} for name, spec in config.train.lora.items()}
        # loaded once for the whole run
        self.scorer = scorer if scorer is not None else find_scorer(config.scorer, **config.scorer_options)
        self.system: Path = Path(config.system)  # what the current round starts from
        self.weights: Path | None = None
        self.baseline: dict[str, Any] | None = None

    def start(self) -> None:
        """Round 0: the base system on the held-out inputs, what every round is compared with."""
        if self.held is not None:
            self.baseline = self._evaluate(self.out / "round-0" / "eval", self.system, None)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def round(self, k: int) -> dict[str, Any]:
        cfg, folder = self.config, self.out / f"round-{k}"
        done = folder / "round.json"
        if k > 1 and cfg.reference == "round":
            self.system, self.weights = self._rebase(k), None
        if done.is_file():
            found: dict[str, Any] = json.loads(done.read_text())
            if (folder / "train" / "final" / RUN_FILE).is_file():
                self.weights = folder / "train" / "final"
            self._carry(folder)
            return found
        where = f"round {k}/{cfg.rounds}"
        if not (folder / "samples" / "samples.jsonl").is_file():
            self.say(f"{where}: sampling {len(self.inputs)} inputs x {cfg.samples}")
            sample_inputs(
                self.system,
                self.inputs,
                folder / "samples",
                n=cfg.samples,
                weights=self.weights,
                seed=splitmix(cfg.seed, k),
                scorer=self.scorer,
                batch=cfg.batch,
                decoding=cfg.decoding,
                quiet=not sys.stderr.isatty(),
                trust_remote_code=self.trust,
                options=self.options,
            )
        found_samples = saved.read(folder / "samples")
        prefs = folder / "pairs.jsonl"
        if not prefs.is_file():
            made = pairs(found_samples, cfg.pairing, cfg.min_gap, folder, cfg.min_chosen)
            atomic_write(prefs, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in made.pairs))
        rows = prefs.read_text().splitlines()
        self.say(f"{where}: {len(rows)} {'ranked lists' if cfg.pairing == 'ranked' else 'pairs'}")
        result: dict[str, Any] = {
            "round": k,
            "pairs": len(rows),
            "train_mean_score": statistics.fmean(s.score or 0.0 for s in found_samples),
        }
        if rows:
            result.update(self._train(folder, where))
        elif cfg.reference == "initial":  # nothing to learn from: the weights carry over
            self.say(f"{where}: no pairs (every input's samples scored alike); the weights carry over")
        if self.held is not None:
            self.say(f"{where}: evaluating {len(self.held)} held-out inputs")
            result.update(self._evaluate(folder / "eval", self.system, self.weights))
        write_json(done, result)
        return result

    def _train(self, folder: Path, where: str) -> dict[str, Any]:
        run = folder / "train"
        if not (run / "final" / RUN_FILE).is_file():
            resuming = any((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else False
            trainer = Trainer(
                self.system,
                folder / "pairs.jsonl",
                run,
                self.config.train.model_copy(
                    update={"quiet": self.config.train.quiet or not sys.stderr.isatty()}
                ),
                trust_remote_code=self.trust,
                weights=self.weights,
            )
            self.say(f"{where}: training {trainer.total_steps} steps" + (" (resumed)" if resuming else ""))
            trainer.train(resume=resuming)
        self.weights = run / "final"
        self._carry(folder)
        last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
        return {"loss": last["loss"], "accuracy": last["rewards/accuracy"]}

    def _carry(self, folder: Path) -> None:
        """With `reference="round"`: the round's trained components exported merged, the next base."""
        if self.config.reference != "round" or not (folder / "train" / "final" / RUN_FILE).is_file():
            return
        from compound.export import export

        target = folder / "export"
        if not (target / "done").is_file():
            export(folder / "train", target, trust_remote_code=self.trust)
            (target / "done").write_text("")

    def _rebase(self, k: int) -> Path:
        """Round k's system.cmp: the original with each component trained so far at its latest export."""
        path = self.out / f"round-{k}" / "system.cmp"
        if not path.is_file():
            folders: dict[str, Path] = {}
            for j in range(1, k):
                exported = self.out / f"round-{j}" / "export"
                folders.update(
                    {p.name: p for p in exported.iterdir() if p.is_dir()} if exported.is_dir() else {}
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, with_folders(self.config.system, folders))
        return path

    def _evaluate(self, folder: Path, system: Path, weights: Path | None) -> dict[str, Any]:
        """The held-out inputs run with the evaluation draws and scored; mean score and win rate
        against round 0."""
        assert self.held is not None
        if not (folder / "samples.jsonl").is_file():
            sample_inputs(
                system,
                self.held,
                folder,
                n=self.config.eval_samples,
                weights=weights,
                seed=splitmix(self.config.seed, EVAL_STREAM),
                scorer=self.scorer,
                batch=self.config.batch,
                decoding=self.config.decoding,
                quiet=not sys.stderr.isatty(),
                trust_remote_code=self.trust,
                options=self.options,
            )
        found = {s.id: s.score or 0.0 for s in saved.read(folder)}
        result: dict[str, Any] = {"eval_mean_score": statistics.fmean(found.values())}
        if self.baseline is not None:
            base = {s.id: s.score or 0.0 for s in saved.read(self.out / "round-0" / "eval")}
            result["win_rate"] = win_rate(found, base)
        return result


def win_rate(scores: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """The share of draws (matched by sample id) where `scores` beats `baseline`, ties counting half."""
    shared = [k for k in scores if k in baseline]
    if not shared:
        raise error("config", "no held-out sample of this round matches one of round 0")
    won = sum(1.0 if scores[k] > baseline[k] else 0.5 if scores[k] == baseline[k] else 0.0 for k in shared)
    return won / len(shared)


def plot(summary: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The rounds' curves: the training samples' mean score, and the held-out mean score and win rate."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rounds = [r["round"] for r in summary]
    series = {
        "training samples: mean score": [r["train_mean_score"] for r in summary],
        "held-out: mean score": [r.get("eval_mean_score") for r in summary],
        "held-out: win rate against round 0": [r.get("win_rate") for r in summary],
    }
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, values in series.items():
        if all(v is not None for v in values):
            ax.plot(rounds, values, marker="o", label=label)
    ax.set_xlabel("round")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
