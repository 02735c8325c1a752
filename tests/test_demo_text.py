"""The text demo: its words split once (no word both trained on and held out), and a run end to end on a
tiny chat model of a real class, each reported accuracy measured again here from the run's folders."""

import json
import statistics
from dataclasses import replace

import pytest
from chat_models import chat_lm
from compound_demos import text as demo

import compound
from compound.diagnostics import CompoundError
from compound.export import export


def test_training_and_held_out_words_are_apart_and_the_labels_take_turns():
    settings = demo.TextSettings()
    train, held = demo.split(settings)
    assert len(train) == 3 * settings.train_per_label and len(held) == 3 * settings.held_per_label
    assert not {r["word"] for r in train} & {r["word"] for r in held}
    assert [r["answer"] for r in held[:6]] == list(demo.LABELS) * 2
    assert all(r["word"] in demo.WORDS[r["answer"]] for r in train + held)
    assert demo.split(settings) == (train, held)  # drawn once, the same every run
    with pytest.raises(CompoundError, match="there are 20"):
        demo.split(replace(settings, train_per_label=10, held_per_label=11))


def greedy_accuracy(cmp, held, weights=None) -> float:
    """Held-out exact match of the system in `cmp` (with a weights folder's weights and text), greedy."""
    model = compound.load(cmp, weights=weights)
    rows = model.sample([{"word": r["word"]} for r in held], n=1, do_sample=False)
    return statistics.fmean(float(r["final"] == h["answer"]) for r, h in zip(rows, held, strict=True))


@pytest.mark.slow
def test_the_demo_runs_every_condition_and_reports_what_its_runs_measure(tmp_path):
    settings = demo.TextSettings(
        seeds=(0,),
        train_per_label=1,
        held_per_label=1,
        bootstrap_budget=1,
        gepa_budget=4,
        minibatch=1,
        reflection_tokens=8,
        samples=2,
        steps=1,
        batch_size=2,
    )
    model = chat_lm(tmp_path / "qwen2", "qwen2")
    out = tmp_path / "run"
    page = demo.run(out, settings, model=model).read_text()
    results = json.loads((out / "results.json").read_text())["results"]
    assert list(results) == list(demo.CONDITIONS)
    _, held = demo.split(settings)
    cmp, seed = out / "categories.cmp", out / "seed-0"
    assert results["base"] == [greedy_accuracy(cmp, held)]
    assert results["text only: GEPA"] == [greedy_accuracy(cmp, held, seed / "gepa" / "final")]
    for condition, run in (("alternating (p w p)", "p-w-p"), ("weights then text", "w-p")):
        export(seed / run, tmp_path / run)  # the last round's weights with the run's text
        assert results[condition] == [greedy_accuracy(tmp_path / run / cmp.name, held)]
    for condition, (value,) in results.items():
        assert f"| {condition} | {100 * value:.1f}% | {100 * value:.1f} |" in page
    assert "Credit (`compound credit`" in page
