"""GEPA on a compound system: reflective evolution of its params, through GEPA's adapter protocol.

GEPA (Agrawal et al. 2025, the `gepa` package) keeps a Pareto front of
candidates (a text for each param), picks one, runs it on a minibatch of
training examples, asks a reflection LM for a better text of one param given
what that param did, and keeps the new candidate when it does better on the
minibatch and then on the validation examples. compound's adapter:

- `evaluate(batch, candidate)`: the system with the candidate's params runs
  each example (`Rollouts`: seeded, kept, replayed on resume); the scores are
  the scorer's;
- `make_reflective_dataset`: for a param, the records of the nodes whose
  factors read it (`Factor.params`) and no others: each node's parents and its
  rendered prompt ("Inputs"), its output and the outputs downstream of it
  ("Generated Outputs"), and the score with the scorer's own feedback
  ("Feedback"). Credit follows the declared graph: a param of the writer is
  shown what the writer wrote and what the painter made of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from compound import ir
from compound.diagnostics import CompoundError, error
from compound.optimize.evaluate import Rollout, Rollouts
from compound.optimize.reflection import ReflectionLM
from compound.text import Text


def reached(system: ir.System, param: str) -> list[str]:
    """The nodes whose factors read `param`, in topological order."""
    return [f.node for f in system.factors if param in f.params]


def downstream(system: ir.System, nodes: Sequence[str]) -> list[str]:
    """The nodes that read any of `nodes`, directly or not (those themselves left out), in order."""
    found = set(nodes)
    later = []
    for node in system.nodes:
        if node.name not in found and any(p in found for p in node.parents):
            found.add(node.name)
            later.append(node.name)
    return later


def records(system: ir.System, param: str, rollouts: Sequence[Rollout]) -> list[dict[str, Any]]:
    """GEPA's reflective dataset for `param`: one record per rollout and node the param reaches."""
    nodes = reached(system, param)
    after = downstream(system, nodes)
    found = []
    for rollout in rollouts:
        for name in nodes:
            if name not in rollout.steps:  # refused before it ran: the reason is all there is to show
                found.append({"Inputs": {}, "Generated Outputs": {}, "Feedback": rollout.feedback})
                continue
            step = rollout.steps[name]
            later = {n: rollout.steps[n].value for n in after if n in rollout.steps}
            found.append(
                {
                    "Inputs": {**{k: _text(v) for k, v in step.parents.items()}, "prompt": step.prompt or ""},
                    "Generated Outputs": {name: _text(step.value), **{k: _text(v) for k, v in later.items()}},
                    "Feedback": f"{rollout.feedback} (system score {rollout.score:.3f})",
                }
            )
    return found


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"{k}. {v}" for k, v in enumerate(value, 1))
    return str(value)


class Adapter:
    """compound's `GEPAAdapter`: a candidate is a text for each param; demonstrations stay as they are."""

    propose_new_texts = None

    def __init__(self, system: ir.System, rollouts: Rollouts, base: Text):
        self.system, self.rollouts, self.base = system, rollouts, base

    def text(self, candidate: Mapping[str, str]) -> Text:
        return Text(dict(candidate), dict(self.base.demos))

    def evaluate(self, batch: list[str], candidate: dict[str, str], capture_traces: bool = False) -> Any:
        from gepa.core.adapter import EvaluationBatch

        try:
            found = self.rollouts.run(self.text(candidate), batch)
        except CompoundError as e:  # a proposal that does not fit (a template field no argument gives)
            said = f"this text was refused, so every example scored 0: {e.diagnostics[0].message}"
            found = [Rollout(example, {}, {}, 0.0, said) for example in batch]
        return EvaluationBatch(
            outputs=[r.row for r in found],
            scores=[r.score for r in found],
            trajectories=list(found) if capture_traces else None,
        )

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        trajectories = eval_batch.trajectories or []
        return {param: records(self.system, param, trajectories) for param in components_to_update}


class _Quiet:
    """GEPA's log lines go to the run folder's gepa.log, not the console."""

    def __init__(self, path: Any):
        self.path = path

    def log(self, message: str, *args: Any, **kwargs: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{message}\n")


def search(
    adapter: Adapter,
    seed_text: Text,
    train: Sequence[str],
    val: Sequence[str],
    reflect: ReflectionLM,
    budget: int,
    seed: int,
    minibatch: int,
    log: Any,
) -> list[dict[str, Any]]:
    """Run GEPA; every candidate it kept, with its validation score and parents, best last in rank."""
    import gepa

    def lm(prompt: str | list[dict[str, Any]]) -> str:
        if not isinstance(prompt, str):  # gepa 0.1.4's proposer writes text; a chat is not ours to flatten
            raise error("config", "GEPA asked the reflection LM with chat messages; compound's take text")
        return reflect(prompt)

    result: Any = gepa.optimize(
        seed_candidate=dict(seed_text.params),
        trainset=list(train),
        valset=list(val),
        adapter=cast(Any, adapter),  # GEPAAdapter is a Protocol that mypy cannot match structurally here
        reflection_lm=lm,
        max_metric_calls=budget,
        reflection_minibatch_size=minibatch,
        seed=seed,
        logger=_Quiet(log),
        display_progress_bar=False,
        raise_on_exception=True,
    )
    return [
        {"params": dict(candidate), "score": float(score), "parents": [p for p in parents if p is not None]}
        for candidate, score, parents in zip(
            result.candidates, result.val_aggregate_scores, result.parents, strict=True
        )
    ]
