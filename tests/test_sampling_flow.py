"""Sampling systems into preference data, and SysDPO-Sampling against SysDPO-Direct."""

import json
from pathlib import Path

import numpy as np
from conftest import CORPUS, launch_two
from PIL import Image
from synth import outputs_only, storyboard_cmp, storyboard_prefs
from typer.testing import CliRunner

from compound.cli import app
from compound.testing import tiny_models
from compound.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_sample_then_pairs_then_train_on_the_storyboard_example(tmp_path):
    cmp = tmp_path / "storyboard.cmp"
    cmp.write_text((ROOT / "examples" / "storyboard.cmp").read_text())
    tiny_models(cmp, CORPUS)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"request": "a disc growing"}\n{"request": "a scene getting darker"}\n')
    sampling = ["--max-new-tokens", 16, "--steps", 4, "--seed", 3]
    invoke(
        "sample",
        cmp,
        "--inputs",
        inputs,
        "--n",
        3,
        "--out",
        tmp_path / "samples",
        "--scorer",
        "progression",
        *sampling,
    )
    samples = [json.loads(line) for line in (tmp_path / "samples" / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == ["0-0", "0-1", "0-2", "1-0", "1-1", "1-2"]
    assert all(
        len(s["values"]["image"]) == 3 and (tmp_path / "samples" / s["values"]["image"][0]).exists()
        for s in samples
    )
    sheet = np.asarray(Image.open(tmp_path / "samples" / "contact.png").convert("L"))
    assert sheet.shape[0] >= 2 * 64 and (sheet[4:68, 224:288] < 250).mean() > 0.5  # a thumbnail, not blank
    assert (tmp_path / "samples" / "contact.html").read_text().count("<img") == 18

    result = invoke("pairs", tmp_path / "samples", "--out", tmp_path / "prefs" / "pairs.jsonl")
    pairs = [json.loads(line) for line in (tmp_path / "prefs" / "pairs.jsonl").read_text().splitlines()]
    assert f"{len(pairs)} pairs from 6 samples of 2 inputs" in result.stderr
    by_id = {s["id"]: s for s in samples}
    for pair in pairs:
        scores = [s["score"] for s in samples if s["input"] == pair["input"]]
        chosen = next(s for s in by_id.values() if s["values"]["plan"] == pair["chosen"]["plan"])
        assert chosen["score"] == max(scores) > min(scores)
        assert pair["chosen"]["image"][0].startswith("../samples/images/")
    strict = invoke("pairs", tmp_path / "samples", "--out", tmp_path / "none.jsonl", "--min-chosen", 1.5)
    assert "0 pairs from 6 samples of 2 inputs (2 inputs without one: " in strict.stderr  # q is at most 1
    assert "or best < 1.5" in strict.stderr and (tmp_path / "none.jsonl").read_text() == ""

    invoke(
        "train",
        cmp,
        "--data",
        tmp_path / "prefs" / "pairs.jsonl",
        "--out",
        tmp_path / "run",
        "--steps",
        2,
        "--batch-size",
        2,
        "--quiet",
    )
    assert (tmp_path / "run" / "final" / "writer" / "adapter_model.safetensors").exists()

    invoke(
        "sample",
        cmp,
        "--inputs",
        inputs,
        "--out",
        tmp_path / "best",
        "--best-of",
        3,
        "--scorer",
        "progression",
        *sampling,
    )
    best = [json.loads(line) for line in (tmp_path / "best" / "samples.jsonl").read_text().splitlines()]
    for row, k in zip(best, (0, 1), strict=True):
        assert row["score"] == max(s["score"] for s in samples if s["id"].startswith(f"{k}-"))
        assert row["values"]["plan"] == by_id[row["id"]]["values"]["plan"]


def test_two_processes_sample_what_one_does(tmp_path):
    cmp = tmp_path / "moa.cmp"
    cmp.write_text((ROOT / "examples" / "moa.cmp").read_text())
    tiny_models(cmp, CORPUS)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"question": f"{k}+{k}?"}) + "\n" for k in range(5)))
    args = ["sample", str(cmp), "--inputs", str(inputs), "--n", "2", "--batch", "1", "--max-new-tokens", "8"]
    invoke(*args, "--out", tmp_path / "one")
    two = launch_two(*args, "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "one" / "samples.jsonl").read_text() == (
        tmp_path / "two" / "samples.jsonl"
    ).read_text()
    assert not list((tmp_path / "two").glob("samples-*.jsonl"))


def test_training_on_output_only_rows_and_on_full_rows_both_learn(tiny, tmp_path):
    cmp = storyboard_cmp(tmp_path, tiny["lm"], tiny["painter"])
    full = storyboard_prefs(tmp_path, "train", 16, seed=0)
    held = storyboard_prefs(tmp_path, "held", 16, seed=1)
    sparse = outputs_only(full, tmp_path / "outputs.jsonl")
    for data, sampling in ((full, 0), (sparse, 16)):
        trainer = Trainer(
            cmp,
            data,
            tmp_path / f"run-{sampling}",
            steps=10,
            batch_size=8,
            learning_rate=1e-3,
            learning_rates={"painter": 1e-4},
            candidates=3,
            refresh_every=5,
            eval_data=held,
            quiet=True,
            report_to=[],
        )
        assert trainer.sampling == sampling
        trainer.train()
        after = trainer.evaluate(trainer.eval_data.pairs)
        assert after["rewards/accuracies"] >= 0.75 and after["rewards/margins"] > 0, (sampling, after)
    plans = {a["plan"] for _, found in trainer.candidates.found.values() for a in found}
    assert plans and all(p.startswith("disc ") and "\ndisc " in p for p in plans)  # the pattern held


def test_pairs_keep_only_groups_whose_preferred_sample_reaches_min_chosen():
    from compound.samples import Sample
    from compound.samples.pairing import pairs

    def group(name, scores):
        return [
            Sample(f"{name}-{i}", {"request": name}, {"plan": f"{name} {s}"}, s) for i, s in enumerate(scores)
        ]

    samples = group("a", [0.9, -1.0, 0.2]) + group("b", [0.25, -1.0, 0.0]) + group("c", [0.6, 0.6])
    plain = pairs(samples)
    assert [(p["chosen"]["plan"], p["rejected"]["plan"]) for p in plain.pairs] == [
        ("a 0.9", "a -1.0"),
        ("b 0.25", "b -1.0"),
    ]  # c's scores tie
    kept = pairs(samples, min_chosen=0.5)
    assert [(p["chosen"]["plan"], p["rejected"]["plan"]) for p in kept.pairs] == [("a 0.9", "a -1.0")]
    assert kept.without_pair == 2 and kept.gaps == [1.9]
    every = pairs(samples, "all", min_chosen=0.2)  # a: 0.9 > 0.2 > -1.0; b: only 0.25 reaches 0.2
    assert sorted((p["chosen"]["plan"], p["rejected"]["plan"]) for p in every.pairs) == [
        ("a 0.2", "a -1.0"),
        ("a 0.9", "a -1.0"),
        ("a 0.9", "a 0.2"),
        ("b 0.25", "b -1.0"),
        ("b 0.25", "b 0.0"),
    ]
