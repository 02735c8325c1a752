"""`compound align`: online rounds on the storyboard and moa examples with model scorers, resuming after
SIGKILL at every stage to the very weights of an uninterrupted run, `--reference round`, and the credit
report."""

import json
import os
import signal
import subprocess
import sys
import time
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
    write = lambda name, qs: _inputs(root / name, [{"question": q, "answer": str(eval(q[:-1]))} for q in qs])  # noqa: E731
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
        "scorer_options": {"path": str(moa["encoder"]), "field": "final", "reference": "answer"},
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
    for k in (1, 2):
        folder = out / f"round-{k}"
        assert (folder / "samples" / "samples.jsonl").is_file() and (folder / "pairs.jsonl").is_file()
        assert (folder / "train" / "final" / "compound.json").is_file() and (
            folder / "eval" / "samples.jsonl"
        ).is_file()
        assert 0 <= summary[k - 1]["win_rate"] <= 1 and -1 <= summary[k - 1]["eval_mean_score"] <= 1
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
        "reference=answer",
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
    summary = align(config, tmp_path / "run")
    assert summary[0]["pairs"] == 3 and 0 <= summary[0]["win_rate"] <= 1
    table = credit(tmp_path / "run", held)
    assert [r["system"] for r in table] == [
        "base",
        "trained",
        "trained, writer reverted",
        "trained, painter reverted",
    ]
    assert table[0]["win_rate"] == 0.5  # the base against itself: every draw a tie
    assert (tmp_path / "run" / "credit" / "CREDIT.md").read_text().startswith("| system |")
