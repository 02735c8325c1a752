"""`compound demo moa`: the paper's second experiment, a mixture of agents aligned as a system.

Three proposers (one model, shared parameters, as in `examples/moa.cmp`) answer
a question; an aggregator reads the question and the three answers and writes
the final answer. The questions are two-digit additions, `47+85=`, with the
answer's three digits written least significant first (`231` for 132), which
lets a tiny model carry; the preference is exact match of the final answer.

Both sides are imperfect in complementary ways, as the base models' synthetic
pretraining data makes them:

- a proposer was trained on answers whose digits are each replaced by a wrong
  one with probability `NOISE`: right when greedy, wrong in some digit about
  half the time when sampled, with independent errors that a per-digit
  majority of three answers mostly fixes;
- the aggregator was trained to write that per-digit majority only
  `MAJORITY` of the time, else to copy one of the answers: it starts as a
  copier, partly a voter.

So training the proposers sharpens them, training the aggregator turns it into
a voter, and training both gets both. Without the NLL term on the chosen side,
DPO moves the aggregator's probability onto answers no proposer wrote
(likelihood displacement); the table shows that failure and the fix.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from compound_demos.protocol import (
    ONLINE,
    Column,
    Method,
    Settings,
    Task,
    online_methods,
    paper_methods,
    training,
)

from compound import TrainConfig
from compound.backends.fn import fill
from compound.grammar import quote

NOISE = 0.25  # a proposer's training answers: each digit wrong with this probability
MAJORITY = 0.3  # the aggregator's training targets: the per-digit majority this often, else a copied answer
HELD = 400  # held-out questions
PROPOSERS = 3
PROPOSE = "{question}>"
AGGREGATE = "{question}\n{answer}\n>"
REFINE = "{question}\n{draft}\n>"  # moa2's second layer reads the drafts the way the aggregator reads answers


@dataclass(frozen=True)
class Question:
    a: int
    b: int

    @property
    def text(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def inputs(self) -> dict[str, str]:
        return {"question": self.text}

    @property
    def answer(self) -> str:
        """The sum's three digits, least significant first."""
        return f"{self.a + self.b:03d}"[::-1]


@cache
def every_question() -> tuple[Question, ...]:
    """All 8,100 questions `a+b=` (a, b in 10..99), shuffled once."""
    every = [Question(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(0).shuffle(every)
    return tuple(every)


def questions(split: str) -> list[Question]:
    """Held-out questions (the first `HELD`), training ones (the rest), or validation ones (the first
    `HELD` training questions, kept out of the pairs when scored on)."""
    every = every_question()
    return list({"held": every[:HELD], "validation": every[HELD : 2 * HELD]}.get(split, every[HELD:]))


def noisy(answer: str, rng: random.Random, p: float = NOISE) -> str:
    """The answer with each digit replaced by a wrong one with probability p."""
    return "".join(rng.choice([d for d in "0123456789" if d != c]) if rng.random() < p else c for c in answer)


def majority(answers: Sequence[str]) -> str:
    """The per-digit majority of the answers (the first answer's digit where no digit has a majority)."""
    if len({len(a) for a in answers}) != 1:
        return answers[0]
    out = []
    for digits in zip(*answers, strict=True):
        digit, count = Counter(digits).most_common(1)[0]
        out.append(digit if count > 1 else digits[0])
    return "".join(out)


def proposal(rng: random.Random) -> tuple[str, str]:
    """A proposer's pretraining example: (prompt, noisy answer)."""
    question = rng.choice(every_question())
    return fill(PROPOSE, question.inputs), noisy(question.answer, rng)


def aggregation(rng: random.Random, template: str = AGGREGATE, field: str = "answer") -> tuple[str, str]:
    """An aggregator's pretraining example: three noisy answers, and their majority or one of them copied."""
    question = rng.choice(every_question())
    answers = [noisy(question.answer, rng) for _ in range(PROPOSERS)]
    target = majority(answers) if rng.random() < MAJORITY else rng.choice(answers)
    return fill(template, {**question.inputs, field: answers}), target


def refinement(rng: random.Random) -> tuple[str, str]:
    """A second-layer proposer's example (`compound demo moa2`): it reads three drafts and, like the
    aggregator, writes their majority or copies one."""
    return aggregation(rng, REFINE, "draft")


def proposal_or_refinement(rng: random.Random) -> tuple[str, str]:
    """The two-layer proposer's pretraining: half first-layer answers, half refinements."""
    return proposal(rng) if rng.random() < 0.5 else refinement(rng)


def corpus() -> list[str]:
    return ["0123456789+=>\n. ", fill(AGGREGATE, {"question": "12+34=", "answer": ["1", "2", "3"]})]


@dataclass
class MoASettings(Settings):
    rounds: int = 3
    # at 3e-4 the aggregator stayed a sampler of copies (tuned on training questions: docs/experiments/moa.md)
    train: TrainConfig = field(
        default_factory=lambda: training(steps=400, learning_rates={"aggregator": 1e-3})
    )
    train_requests: int | None = 1000
    # online, the aggregator at 1e-3 lost accuracy round after round (each round restarts the schedule's
    # warm-up and decay); validation questions, seed 0, joint online: 1e-3 0.802, 3e-4 0.878, 1e-4 0.932
    # (proposers only 0.921)
    online: dict[str, Any] = field(default_factory=lambda: {"learning_rates": {"aggregator": 1e-4}})
    # the one-round protocol's passes over its pairs (400 steps x 16 / ~2,600 pairs): at a fixed 133 steps a
    # round, rounds 2-3 (half the pairs of round 1: the system is right more often) ran ~5 epochs and the
    # training samples' accuracy fell in round 3; validation questions, seeds 0 1, joint ranked lists
    # against proposers only ranked lists: 2.5 passes 93.4% vs 89.7% (3.5: joint ranked lists 90.9%)
    online_epochs: float | None = 2.5
    pretrain: tuple[int, ...] = (2000, 1500)  # proposer, aggregator steps
    showcase: tuple[str, ...] = field(default_factory=lambda: tuple(q.text for q in questions("held")[:6]))


#: Joint online rounds with the aggregator's beta at a tenth of the shared 0.2 (per-node beta), so that
#: its log ratio stops taking most of the system's margin (tuned on validation questions of moa2, seed 0:
#: 0.2 -> 73.7% final accuracy, 0.05 -> 74.5%, 0.02 -> 87.0%; docs/experiments/moa.md).
BALANCED = Method(
    f"SysDPO (joint), {ONLINE} online rounds, aggregator beta 0.02",
    ("proposer", "aggregator"),
    online=ONLINE,
    node_betas=(("final", 0.02),),
    credit=True,
)


class MixtureOfAgents(Task):
    name = "moa"
    title = "mixture of agents (three proposers, one aggregator)"
    methods = (
        *paper_methods(("proposers only", "proposer"), ("aggregator only", "aggregator")),
        Method("aggregator only, no NLL", ("aggregator",), nll=0.0),
        Method("SysDPO (joint), no NLL", ("proposer", "aggregator"), nll=0.0),
        *online_methods(("proposers only", "proposer"), ("aggregator only", "aggregator")),
        BALANCED,
    )
    columns: tuple[Column, ...] = (
        Column("final answer accuracy", "accuracy", percent=True, digits=1),
        Column("a proposer's accuracy", "proposer", percent=True, digits=1),
        Column("majority of the proposers", "majority", percent=True, digits=1),
        Column("final answer copies a proposer", "copies", percent=True, digits=0),
    )

    models: tuple[tuple[str, Callable[[random.Random], tuple[str, str]]], ...] = (
        ("proposer", proposal),
        ("aggregator", aggregation),
    )
    layers = 1  # of proposers

    def settings(self, quick: bool, seeds: tuple[int, ...] | None) -> MoASettings:
        if quick:
            settings = MoASettings(seeds=seeds or (0,), train_requests=300, pretrain=())
            settings.train = settings.train.model_copy(update={"steps": 150})
            return settings
        return MoASettings(seeds=seeds or (0, 1, 2))

    def pretrain(self, out: Path, steps: Sequence[int], seed: int = 0, quiet: bool = False) -> Path:
        import json

        from compound_demos.pretrain import train_lm
        from rich.progress import Progress

        from compound.testing import byte_tokenizer

        # vocab_size 258: the 256 byte symbols, EOS and PAD, no merges: one token per character
        tokenizer = byte_tokenizer(corpus(), vocab_size=258)
        with Progress(disable=quiet) as progress:
            for (name, example), count in zip(self.models, steps, strict=True):
                train_lm(out / name, tokenizer, example, count, seed, progress, f"the {name}", batch=256)
        (out / "pretrain.json").write_text(json.dumps({"steps": list(steps), "seed": seed}))
        return out

    def system_file(self, out: Path, base: Path, settings: Settings) -> Path:
        def node(name: str, component: str, parents: str, template: str) -> str:
            return (
                f"{name:<9} : text ~ {component}({parents}, template={quote(template)}, max_new_tokens=4)\n"
            )

        two = self.layers == 2
        nodes = [node(f"draft[{PROPOSERS}]", "proposer", "question", PROPOSE)] if two else []
        nodes += [
            node(
                f"answer[{PROPOSERS}]",
                "proposer",
                "question, draft" if two else "question",
                REFINE if two else PROPOSE,
            ),
            node("final", "aggregator", "question, answer", AGGREGATE),
        ]
        path = out / f"{self.name}.cmp"
        path.write_text(
            f"# examples/{self.name}.cmp with the demo's models and prompts: {self.title}.\n"
            f"system {self.name}\n\n"
            f"component proposer   = causal_lm({quote(str(base / 'proposer'))}, batch_size=512)\n"
            f"component aggregator = causal_lm({quote(str(base / 'aggregator'))}, batch_size=512)\n\n"
            "input question : text\n\n" + "".join(nodes) + "\noutput final\n"
        )
        return path

    def requests(self, split: str) -> list[Question]:
        return questions(split)

    def score(self, row: Mapping[str, Any], request: Question) -> float:
        return float(row["final"] == request.answer)

    def summarize(self, rows: Sequence[Mapping[str, Any]], requests: Sequence[Question]) -> dict[str, float]:
        pairs = list(zip(rows, requests, strict=True))
        return {
            "accuracy": statistics.fmean(r["final"] == q.answer for r, q in pairs),
            "proposer": statistics.fmean(a == q.answer for r, q in pairs for a in r["answer"]),
            "majority": statistics.fmean(majority(r["answer"]) == q.answer for r, q in pairs),
            "copies": statistics.fmean(r["final"] in r["answer"] for r, _ in pairs),
        } | (
            {"draft": statistics.fmean(d == q.answer for r, q in pairs for d in r["draft"])}
            if self.layers > 1
            else {}
        )

    def show(
        self, shown: Mapping[str, Sequence[Mapping[str, Any]]], requests: Sequence[Question], out: Path
    ) -> str:
        lines = [
            "The same held-out questions under every method (one sample each; answers least significant "
            "digit first; proposals -> final):",
            "",
            "| method | " + " | ".join(f"`{q.text}` ({q.answer})" for q in requests) + " |",
            "|---|" + "---|" * len(requests),
        ]
        for method, rows in shown.items():
            cells = [
                " -> ".join(" ".join(r[layer]) for layer in ("draft", "answer") if layer in r)
                + f" -> **{r['final']}** {'✓' if r['final'] == q.answer else '✗'}"
                for r, q in zip(rows, requests, strict=True)
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


class TwoLayerMixtureOfAgents(MixtureOfAgents):
    """`compound demo moa2`: `examples/moa2.cmp`, three proposers, then the same proposers (shared
    parameters) reading every first-layer draft, then the aggregator. The proposer is pretrained on both
    jobs, each half the time."""

    name = "moa2"
    title = "two-layer mixture of agents (drafts, refined answers, one aggregator)"
    models = (("proposer", proposal_or_refinement), ("aggregator", aggregation))
    layers = 2
    # all but the no-NLL rows; the aggregator-beta row, left out while the NLL was averaged over every node's
    # tokens (validation, seeds 0 1: 88.6%), is in: validation questions, seeds 0 1 2, per-component NLL,
    # each round's start the reference: 94.9% against joint 94.4% and proposers only 93.7%
    methods = tuple(m for m in MixtureOfAgents.methods if m.nll != 0.0)
    columns = (
        MixtureOfAgents.columns[0],
        Column("a draft's accuracy", "draft", percent=True, digits=1),
        Column("a refined answer's accuracy", "proposer", percent=True, digits=1),
        Column("majority of the refined answers", "majority", percent=True, digits=1),
        Column("final answer copies a refined answer", "copies", percent=True, digits=0),
    )

    def settings(self, quick: bool, seeds: tuple[int, ...] | None) -> MoASettings:
        settings = super().settings(quick, seeds)
        # seven factors to moa's four: 2.5 passes a round still overfit (the training samples' accuracy fell
        # in round 3); validation questions, seeds 0 1, proposers only / joint: 1.0 passes 91.5% / 87.8%,
        # 1.5 91.9% / 92.4%, 2.5 88.6% / 86.7%
        settings.online_epochs = 1.5
        if not quick:
            settings.pretrain = (3000, 1500)  # the proposer learns two jobs
        return settings
