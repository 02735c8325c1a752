"""Running a system with one choice of text on examples: each example's sampled row, its per-node trace,
its score and the scorer's feedback; every rollout kept in the run folder and read back on resume.

An example is one input row of the training or the validation split, named
`train:3` or `val:0`. With sampling, a rollout is a pure function of (text,
example): each example is drawn alone with the draws of (seed, example). Greedy
rollouts are batched (`batch` examples a call, for speed), and a padded batch
may differ from a lone run in a last bit; so each batch is kept as one line of
`evaluations.jsonl`, whole or not at all, and a resumed search, asking for the
same rollouts in the same order (the search is deterministic), runs the same
batches again and ends where an uninterrupted one ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compound.diagnostics import CompoundError, error
from compound.interpret.trace import RunTrace
from compound.io import append_jsonl, mend_jsonl, read_jsonl
from compound.samples.score import score as score_samples
from compound.samples.store import Sample
from compound.scorers import Scorer
from compound.seeds import splitmix
from compound.system import CompiledSystem
from compound.text import Text


@dataclass(frozen=True)
class Step:
    """What one node did in a rollout: its prompt (a sampled node's), its parents' values, its value."""

    node: str
    prompt: str | None
    parents: dict[str, Any]
    value: Any


@dataclass(frozen=True)
class Rollout:
    """One example run with one text: the row (its inputs and every node's value), the steps, the
    score, and the scorer's feedback on it (empty when the scorer gives none)."""

    example: str
    row: dict[str, Any]
    steps: dict[str, Step]
    score: float
    feedback: str

    def to_json(self) -> dict[str, Any]:
        return {
            "example": self.example,
            "row": _plain(self.row),
            "steps": {
                k: {"prompt": s.prompt, "parents": _plain(s.parents), "value": _plain(s.value)}
                for k, s in self.steps.items()
            },
            "score": self.score,
            "feedback": self.feedback,
        }

    @classmethod
    def from_json(cls, found: Mapping[str, Any]) -> Rollout:
        steps = {k: Step(k, s["prompt"], dict(s["parents"]), s["value"]) for k, s in found["steps"].items()}
        return cls(
            str(found["example"]), dict(found["row"]), steps, float(found["score"]), str(found["feedback"])
        )


def _plain(value: Any) -> Any:
    """A value as JSON holds it: text as is, lists of it, an image as the word `<image>`."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool) or value is None else "<image>"


def feedback(scorer: Scorer, row: Mapping[str, Any], score: float) -> str:
    """The scorer's words on a row (its `feedback(row)`, if it has one), else its score."""
    said = getattr(scorer, "feedback", None)
    words = str(said(row)) if callable(said) else ""
    return words or f"score {score:.3f}"


class Rollouts:
    """Runs a system with texts on examples, keeping every rollout (in memory and in `log`)."""

    def __init__(
        self,
        model: CompiledSystem,
        examples: Mapping[str, Mapping[str, Any]],
        scorer: Scorer,
        seed: int,
        decoding: Mapping[str, Any],
        log: Path | None = None,
        batch: int = 8,
        progress: Callable[[int], None] | None = None,
    ):
        self.model, self.examples, self.scorer, self.seed = model, examples, scorer, seed
        self.decoding, self.log, self.batch, self.progress = dict(decoding), log, batch, progress
        self.done: dict[tuple[str, str], Rollout] = {}
        self.runs = 0  # rollouts run (not read back) in this process
        if log is not None:
            mend_jsonl(log)
        if log is not None and log.is_file():
            self._read(log)

    def _read(self, log: Path) -> None:
        for line in read_jsonl(log):
            if line.problem is not None:  # a line a crash cut short: its rollout runs again
                continue
            found = line.value
            try:
                for rollout in map(Rollout.from_json, found["rollouts"]):
                    self.done[(found["text"], rollout.example)] = rollout
            except (KeyError, TypeError, ValueError):
                raise error(
                    "config", f"{log} line {line.number} is not a rollout; the run folder is damaged"
                ) from None

    def run(self, text: Text, examples: Sequence[str]) -> list[Rollout]:
        """Each example's rollout with `text` (run once; asked again, read back)."""
        key = text.key()
        todo = [e for e in dict.fromkeys(examples) if (key, e) not in self.done]
        if todo:
            self.model.set_text(text)
            for start in range(0, len(todo), self.batch):
                self._keep(key, self._run(todo[start : start + self.batch]))
        return [self.done[(key, e)] for e in examples]

    def _run(self, names: Sequence[str]) -> list[Rollout]:
        rows: list[dict[str, Any]] = []
        if self.decoding.get("do_sample") is False:  # greedy: nothing drawn, the batch may be shared
            inputs = [self.examples[name] for name in names]
            rows = self.model.sample(
                inputs, n=1, generator=torch.Generator().manual_seed(self.seed), **self.decoding
            )
        for name in names if not rows else []:  # each example with its own draws, whatever batch it is in
            generator = torch.Generator().manual_seed(splitmix(self.seed, *(ord(c) for c in name)))
            rows += self.model.sample([self.examples[name]], n=1, generator=generator, **self.decoding)
        samples = [
            Sample(
                name,
                dict(self.examples[name]),
                {k: v for k, v in row.items() if k not in self.examples[name]},
            )
            for name, row in zip(names, rows, strict=True)
        ]
        try:
            score_samples(samples, self.scorer)
        except CompoundError as e:
            raise error("config", e.diagnostics[0].message) from None
        traces = self.model.trace([s.row for s in samples], scores=False)
        return [
            Rollout(
                s.id,
                s.row,
                _steps(trace),
                float(s.score or 0.0),
                feedback(self.scorer, s.row, float(s.score or 0.0)),
            )
            for s, trace in zip(samples, traces, strict=True)
        ]

    def _keep(self, key: str, batch: Sequence[Rollout]) -> None:
        for rollout in batch:
            self.done[(key, rollout.example)] = rollout
        self.runs += len(batch)
        if self.log is not None:  # one line a batch: a crash keeps all of it or none
            append_jsonl(self.log, {"text": key, "rollouts": [r.to_json() for r in batch]})
        if self.progress is not None:
            self.progress(len(batch))


def _steps(trace: RunTrace) -> dict[str, Step]:
    return {name: Step(name, t.prompt, dict(t.parents), t.value) for name, t in trace.items()}
