"""`compound align`: online rounds on the storyboard and moa examples with model scorers, resuming after
SIGKILL at every stage to the very weights of an uninterrupted run, `--reference round`, and the credit
report."""

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from conftest import CORPUS
from safetensors.torch import load_file
from test_model_scorers import tiny_clip, tiny_encoder

from compound.align import AlignConfig, align
from compound.credit import credit
from compound.evaluation import win_rate
from compound.model_folders import with_folders
from compound.testing import tiny_models
from compound.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [f"{a}+{b}?" for a, b in ((1, 2), (3, 4), (2, 2), (5, 1), (4, 4), (6, 2))]


@pytest.fixture(scope="module")
def moa(tmp_path_factory):
    root = tmp_path_factory.mktemp("moa")
    cmp = root / "moa.cmp"
    cmp.write_text((ROOT / "examples" / "moa.cmp").read_text())
    tiny_models(cmp, CORPUS)
    encoder = tiny_encoder(root / "encoder")
    # the expected answer in a column `truth`: a column may not share a node's name (moa.cmp's `answer`)
    write = lambda name, qs: _inputs(root / name, [{"question": q, "truth": str(eval(q[:-1]))} for q in qs])  # noqa: E731
    return {
        "root": root,
        "cmp": cmp,
        "encoder": encoder,
        "train": write("train.jsonl", QUESTIONS[:4]),
        "held": write("held.jsonl", QUESTIONS[4:]),
    }


def _inputs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def moa_config(moa, **extra):
    settings = {
        "system": str(moa["cmp"]),
        "inputs": str(moa["train"]),
        "scorer": "similarity",
        "scorer_options": {"path": str(moa["encoder"]), "field": "final", "reference": "truth"},
        "rounds": 2,
        "samples": 3,
        "eval": str(moa["held"]),
        "eval_samples": 2,
        "decoding": {"max_new_tokens": 6},
        "train": TrainConfig(
            steps=4, batch_size=2, learning_rate=1e-3, save_every=1, quiet=True, report_to=[]
        ),
    }
    return AlignConfig(**{**settings, **extra})


def samples_of(folder: Path) -> list[dict]:
    """A samples.jsonl's records, read with json alone."""
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def scores_of(folder: Path) -> dict[str, float]:
    """A samples.jsonl's scores by sample id."""
    return {r["id"]: r["score"] for r in samples_of(folder)}


def mean_and_win_rate(scores: dict[str, float], baseline: dict[str, float]) -> tuple[float, float]:
    """The mean score, and the share of matched draws won against `baseline`, a tie counting half."""
    assert scores.keys() == baseline.keys() and scores  # the very same draws
    won = sum(1.0 if scores[k] > baseline[k] else 0.5 if scores[k] == baseline[k] else 0.0 for k in scores)
    return sum(scores.values()) / len(scores), won / len(scores)


def check_round(summary_row: dict, folder: Path, baseline: dict[str, float] | None) -> None:
    """A round's summary line against its own files: the training samples' mean score, one pair per input
    whose samples do not all score alike (best-worst), the last training step's loss and accuracy, and the
    held-out mean score and win rate against round 0's samples."""
    train = samples_of(folder / "samples")
    assert summary_row["train_mean_score"] == pytest.approx(
        sum(r["score"] for r in train) / len(train), abs=1e-12
    )
    by_input: dict[str, list[float]] = {}
    for r in train:
        by_input.setdefault(json.dumps(r["input"], sort_keys=True), []).append(r["score"])
    pairs = (folder / "pairs.jsonl").read_text().splitlines()
    assert summary_row["pairs"] == len(pairs) == sum(max(v) - min(v) >= 1e-12 for v in by_input.values())
    last = json.loads((folder / "train" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (summary_row["loss"], summary_row["accuracy"]) == (last["loss"], last["rewards/accuracies"])
    if baseline is not None:
        mean, won = mean_and_win_rate(scores_of(folder / "eval"), baseline)
        assert summary_row["eval_mean_score"] == pytest.approx(mean, abs=1e-12)
        assert summary_row["win_rate"] == pytest.approx(won, abs=1e-12)


def weights(run: Path) -> dict[str, torch.Tensor]:
    final = run / "round-2" / "train" / "final"
    return {
        f"{p.parent.name}/{k}": v
        for p in sorted(final.rglob("*.safetensors"))
        for k, v in load_file(p).items()
    }


def test_align_runs_rounds_on_the_moa_example_with_a_similarity_scorer(moa):
    out = moa["root"] / "run"
    summary = align(moa_config(moa), out)
    assert [r["round"] for r in summary] == [1, 2]
    baseline = scores_of(out / "round-0" / "eval")
    assert len(baseline) == 2 * 2  # two held-out questions x eval_samples
    for k in (1, 2):
        folder = out / f"round-{k}"
        assert (folder / "train" / "final" / "compound.json").is_file()
        check_round(summary[k - 1], folder, baseline)
    assert (out / "summary.png").stat().st_size > 0 and len(
        (out / "summary.jsonl").read_text().splitlines()
    ) == 2
    # round 1 starts from the base (policy = reference: zero rewards); round 2 from round 1's weights
    firsts = [
        json.loads((out / f"round-{k}" / "train" / "metrics.jsonl").read_text().splitlines()[0])
        for k in (1, 2)
    ]
    assert firsts[0]["rewards/chosen"] == 0.0 and firsts[1]["rewards/chosen"] != 0.0


def run_cli(out: Path, moa, *extra: str) -> subprocess.Popen:
    config = moa["root"] / "align.toml"
    config.write_text(
        "rounds = 2\nsamples = 3\neval_samples = 2\n[decoding]\nmax_new_tokens = 6\n"
        "[train]\nsteps = 4\nbatch_size = 2\nlearning_rate = 1e-3\nsave_every = 1\nquiet = true\n"
        "report_to = []\n"
    )
    args = [
        sys.executable,
        "-m",
        "compound",
        "align",
        str(moa["cmp"]),
        "--inputs",
        str(moa["train"]),
        "--eval",
        str(moa["held"]),
        "--out",
        str(out),
        "--config",
        str(config),
        "--scorer",
        "similarity",
        "--option",
        f"path={moa['encoder']}",
        "--option",
        "field=final",
        "--option",
        "reference=truth",
        *extra,
    ]
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def kill_when(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    """SIGKILL the process as soon as `marker` exists (it is then in the middle of that stage)."""
    deadline = time.time() + timeout
    while not marker.exists():
        assert process.poll() is None, f"finished before {marker} appeared: {process.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"{marker} never appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_run_killed_at_every_stage_and_resumed_ends_as_an_uninterrupted_one(moa):
    whole = moa["root"] / "whole"
    done = run_cli(whole, moa)
    assert done.wait() == 0, done.stderr.read()[-3000:]
    out = moa["root"] / "killed"
    stages = [
        out / "round-1" / "samples",  # sampling and scoring (the folder comes first, samples.jsonl last)
        out / "round-1" / "train" / "checkpoints" / "step-000002",  # training
        out / "round-2" / "eval",  # evaluation
    ]
    for k, marker in enumerate(stages):
        kill_when(run_cli(out, moa, *(["--resume"] if k else [])), marker)
    last = run_cli(out, moa, "--resume")
    assert last.wait() == 0, last.stderr.read()[-3000:]
    ours, theirs = weights(out), weights(whole)
    assert ours.keys() == theirs.keys() and ours
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (out / "summary.jsonl").read_text() == (whole / "summary.jsonl").read_text()
    again = run_cli(out, moa)  # without --resume a finished run is not overwritten
    assert again.wait() == 1 and "--resume it, or choose another --out" in again.stderr.read()


def test_reference_round_rebases_each_round_on_the_last_rounds_export(moa):
    out = moa["root"] / "rebased"
    config = moa_config(
        moa,
        reference="round",
        eval=None,
        train=TrainConfig(
            steps=2,
            batch_size=2,
            learning_rate=1e-3,
            quiet=True,
            report_to=[],
            lora={"aggregator": {"r": 4}},
            train=["aggregator"],
        ),
    )
    summary = align(config, out)
    assert len(summary) == 2 and "win_rate" not in summary[0]
    text = (out / "round-2" / "system.cmp").read_text()
    assert str((out / "round-1" / "export" / "aggregator").resolve()) in text  # the trained one, merged
    assert str((moa["root"] / "models" / "proposer").resolve()) in text  # the others, made absolute
    assert "const aggregate" in text  # the rest as written


def test_with_folders_replaces_only_the_paths(tmp_path):
    cmp = tmp_path / "a.cmp"
    cmp.write_text(
        'system s\nconst where = "models/w"\ncomponent w = causal_lm(where, lora(r=4))  # the writer\n'
        "input q : text\na : text ~ w(q)\noutput a\n"
    )
    text = with_folders(cmp, {"w": tmp_path / "new folder"})
    assert f'causal_lm("{(tmp_path / "new folder").resolve()}", lora(r=4))  # the writer' in text


def test_win_rate_counts_ties_half_on_matching_draws():
    assert win_rate(
        {"0-0": 1.0, "0-1": 0.5, "1-0": 0.2}, {"0-0": 0.5, "0-1": 0.5, "1-0": 0.9}
    ) == pytest.approx(0.5)


def test_align_runs_on_the_storyboard_example_with_a_clip_scorer_and_credits_each_component(tmp_path):
    cmp = tmp_path / "storyboard.cmp"
    cmp.write_text((ROOT / "examples" / "storyboard.cmp").read_text().replace("steps=50", "steps=4"))
    tiny_models(cmp, CORPUS)
    clip = tiny_clip(tmp_path / "clip")
    requests = ["a disc growing", "a scene getting darker", "a dot moving left", "the light fading"]
    train = _inputs(tmp_path / "train.jsonl", [{"request": r} for r in requests[:3]])
    held = _inputs(tmp_path / "held.jsonl", [{"request": r} for r in requests[3:]])
    config = AlignConfig(
        system=str(cmp),
        inputs=str(train),
        scorer="clip_similarity",
        scorer_options={"path": str(clip), "text": "request"},
        rounds=1,
        samples=2,
        eval=str(held),
        decoding={"max_new_tokens": 12},
        train=TrainConfig(steps=2, batch_size=2, learning_rate=1e-3, quiet=True, report_to=[]),
    )
    run = tmp_path / "run"
    summary = align(config, run)
    assert summary[0]["pairs"] == 3
    baseline = scores_of(run / "round-0" / "eval")
    check_round(summary[0], run / "round-1", baseline)
    table = credit(run, held)
    variants = ["base", "trained", "trained, writer reverted", "trained, painter reverted"]
    assert [r["system"] for r in table] == variants
    # each variant's numbers recomputed from its own samples, against the base variant's
    found = {v: scores_of(run / "credit" / v.replace(", ", "-").replace(" ", "-")) for v in variants}
    for row in table:
        mean, won = mean_and_win_rate(found[row["system"]], found["base"])
        assert row["mean_score"] == pytest.approx(mean, abs=1e-12)
        assert row["win_rate"] == pytest.approx(won, abs=1e-12)
    # the base variant is round 0 again: the same system, seed and evaluation draws, so the same images
    base, zero = samples_of(run / "credit" / "base"), samples_of(run / "round-0" / "eval")
    assert [r["id"] for r in base] == [r["id"] for r in zero] and found["base"] == baseline
    for ours, theirs in zip(base, zero, strict=True):
        for a, b in zip(ours["values"]["image"], theirs["values"]["image"], strict=True):
            assert (run / "credit" / "base" / a).read_bytes() == (run / "round-0" / "eval" / b).read_bytes()
    lines = (run / "credit" / "CREDIT.md").read_text().splitlines()
    assert lines[0] == "| system | held-out mean score | win rate against the base |"
    assert len(lines) == 2 + len(table)
    for line, row in zip(lines[2:], table, strict=True):  # the markdown shows credit.json's numbers
        system, mean, won = (cell.strip() for cell in line.strip("|").split("|"))
        assert system == row["system"]
        assert float(mean) == pytest.approx(row["mean_score"], abs=0.0005 + 1e-9)
        assert float(won) == pytest.approx(row["win_rate"], abs=0.0005 + 1e-9)


def proposers_only(row) -> float:
    """A deterministic score of the proposers' answers alone: the aggregator's final answer plays no part."""
    return zlib.crc32("\n".join(row["answer"]).encode()) / 2**32


def test_credit_with_a_score_of_one_component_reverts_to_the_trained_and_the_base_rows_exactly(moa):
    """Every variant runs on the same draws, and the proposers draw before the aggregator. With a score of
    the proposers' answers only, reverting the aggregator cannot change a score: that row is the trained
    row exactly; reverting the proposer gives the base proposers' answers: that row is the base row."""
    out = moa["root"] / "credited"
    summary = align(moa_config(moa, rounds=1), out, scorer=proposers_only)
    table = credit(out, moa["held"], scorer=proposers_only)
    rows = {r["system"]: (r["mean_score"], r["win_rate"]) for r in table}
    assert list(rows) == ["base", "trained", "trained, proposer reverted", "trained, aggregator reverted"]
    samples = {v: samples_of(out / "credit" / v.replace(", ", "-").replace(" ", "-")) for v in rows}
    answers = {v: [r["values"]["answer"] for r in found] for v, found in samples.items()}
    assert answers["trained, aggregator reverted"] == answers["trained"]
    assert answers["trained, proposer reverted"] == answers["base"]
    assert answers["trained"] != answers["base"]  # not vacuous: training moved the proposers' answers
    assert rows["trained, aggregator reverted"] == rows["trained"]
    assert rows["trained, proposer reverted"] == rows["base"]
    # the rows' numbers are the samples' scores, and those the scorer's
    scores = {v: {r["id"]: r["score"] for r in found} for v, found in samples.items()}
    for v, found in samples.items():
        assert all(r["score"] == proposers_only(r["values"]) for r in found)
        assert rows[v] == pytest.approx(mean_and_win_rate(scores[v], scores["base"]), abs=1e-12)
    # the trained variant, from the exported merged weights, is round 1's evaluation again
    assert scores["trained"] == scores_of(out / "round-1" / "eval")
    assert summary[0]["eval_mean_score"] == pytest.approx(rows["trained"][0], abs=1e-12)
