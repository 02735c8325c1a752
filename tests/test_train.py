"""Training: learning, resuming after SIGKILL, two processes, non-finite steps, metrics, report, export."""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import launch_two
from safetensors.torch import load_file
from synth import storyboard_cmp, storyboard_prefs

import compound
from compound.train import Trainer, TrainingError

QUIET = {"quiet": True, "report_to": []}


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return {
        "root": root,
        "cmp": storyboard_cmp(root, tiny["lm"], tiny["painter"]),
        "train": storyboard_prefs(root, "train", 48, seed=0),
        "held": storyboard_prefs(root, "held", 24, seed=1),
    }


@pytest.mark.parametrize(
    "only", [None, ["writer"], ["painter"]], ids=["joint", "writer-only", "painter-only"]
)
def test_training_raises_held_out_preference_accuracy(setup, only):
    trainer = Trainer(
        setup["cmp"],
        setup["train"],
        setup["root"] / f"run-{only}",
        steps=20,
        batch_size=8,
        learning_rate=1e-3,
        learning_rates={"painter": 1e-4},
        train=only,
        eval_data=setup["held"],
        **QUIET,
    )
    before = trainer.evaluate(trainer.eval_data.pairs)
    trainer.train()
    after = trainer.evaluate(trainer.eval_data.pairs)
    assert (
        before["rewards/accuracies"] == 0.0 and before["rewards/margins"] == 0.0
    )  # policy == reference: every margin is 0
    assert after["rewards/accuracies"] >= 0.8 and after["rewards/margins"] > 0
    frozen = {"writer": "painter", "painter": "writer"}.get(only[0]) if only else None
    if frozen:  # a frozen component contributes a log ratio of exactly zero
        out = trainer.log_ratio(trainer.eval_data.pairs[:4], 0)
        node = "plan" if frozen == "writer" else "image[0]"
        assert torch.equal(out.per_node[node][0], torch.zeros(4))


def run_cli(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "compound", "train", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        **kwargs,
    )


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return {
        f"{f.parent.name}/{k}": v
        for f in sorted((run / "final").glob("*/*.safetensors"))
        for k, v in load_file(f).items()
    }


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(setup):
    root = setup["root"]
    args = [
        setup["cmp"],
        "--data",
        setup["train"],
        "--steps",
        8,
        "--batch-size",
        4,
        "--save-every",
        2,
        "--lr",
        "1e-3",
        "--quiet",
    ]
    whole = run_cli([*args, "--out", root / "whole"])
    assert whole.wait(timeout=300) == 0, whole.stderr.read()
    kill_after = random.Random(0).randint(3, 6)
    victim = run_cli([*args, "--out", root / "killed"])
    metrics = root / "killed" / "metrics.jsonl"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < kill_after:
        assert victim.poll() is None, victim.stderr.read()
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert len(metrics.read_text().splitlines()) < 8
    resumed = run_cli([*args, "--out", root / "killed", "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    a, b = final_weights(root / "whole"), final_weights(root / "killed")
    assert a.keys() == b.keys() and a
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    losses = [
        [json.loads(line)["loss"] for line in (root / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("whole", "killed")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 8


def test_two_processes_match_one_with_the_same_global_batch(setup):
    root = setup["root"]
    args = [setup["cmp"], "--data", setup["train"], "--steps", 6, "--lr", "1e-4", "--quiet"]
    one = run_cli([*args, "--out", root / "one", "--batch-size", 4])
    assert one.wait(timeout=300) == 0, one.stderr.read()
    two = launch_two("train", *args, "--out", root / "two", "--batch-size", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    curves = [
        [json.loads(line) for line in (root / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    ]
    assert len(curves[0]) == len(curves[1]) == 6
    for a, b in zip(*curves, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)  # gloo's reduction order: about 1e-5 here
    assert curves[0][-1]["loss"] != curves[0][0]["loss"]


class Flaky(Trainer):
    """A trainer whose loss is NaN on chosen steps."""

    bad: ClassVar[set[int]] = set()

    def loss(self, out):
        loss = super().loss(out)
        return loss * float("nan") if self.step in self.bad else loss


def test_non_finite_steps_are_skipped_counted_and_stop_the_run_with_its_checkpoint_intact(setup):
    root = setup["root"]
    Flaky.bad = {3}
    flaky = Flaky(setup["cmp"], setup["train"], root / "flaky", steps=6, batch_size=4, save_every=2, **QUIET)
    flaky.train()
    rows = [json.loads(line) for line in (root / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [0, 0, 0, 1, 0, 0] and flaky.skipped == 1
    Flaky.bad = set(range(3, 100))
    doomed = Flaky(
        setup["cmp"],
        setup["train"],
        root / "doomed",
        steps=20,
        batch_size=4,
        save_every=2,
        nan_patience=3,
        **QUIET,
    )
    with pytest.raises(TrainingError, match=r"3 steps in a row.*up to step 6.*step-000004"):
        doomed.train()  # a skipped step leaves the weights as they were: step 4's checkpoint is still good
    checkpoint = root / "doomed" / "checkpoints" / "step-000004"
    assert (checkpoint / "state.json").exists() and not list((root / "doomed" / "checkpoints").glob(".*tmp"))
    system = compound.load(setup["cmp"], weights=checkpoint / "components")
    assert all(torch.isfinite(p).all() for p in system.parameters())


def test_metrics_report_and_final_weights(setup):
    from compound.report import report

    run = setup["root"] / "metrics-run"
    Trainer(
        setup["cmp"], setup["train"], run, steps=4, batch_size=4, quiet=True, report_to=["tensorboard"]
    ).train()
    assert list(run.glob("compound/events.out.tfevents.*"))  # TensorBoard's log
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    for key in (
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "nodes/plan/margins",
        "nodes/image[1]/accuracies",
        "nodes/image[0]/share",
        "components/writer/grad_norm",
        "components/painter/lr",
        "pairs_per_second",
    ):
        assert key in last, key
    # each node's share, by hand from the logged margins: margin_n / sum over nodes of |margin_m|
    margins = {n: last[f"nodes/{n}/margins"] for n in ("plan", "image[0]", "image[1]")}
    scale = sum(abs(v) for v in margins.values())
    assert scale > 0  # after three updates the policy has moved off its reference
    for node, margin in margins.items():
        assert last[f"nodes/{node}/share"] == pytest.approx(margin / scale, rel=1e-9)
    assert last["rewards/margins"] == pytest.approx(
        sum(last[f"nodes/{n}/margins"] for n in ("plan", "image[0]", "image[1]")), rel=1e-4
    )
    path = report(run)
    assert "| loss |" in path.read_text()
    for name in ("loss", "accuracy", "margins", "shares"):
        assert (run / "report" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    again = compound.load(setup["cmp"], weights=run / "final")
    assert again.backend("writer").model.peft_config  # the LoRA adapter came back


def test_a_steps_logged_metrics_are_its_own_log_ratios_worked_by_hand(setup):
    """Step 3's metrics recomputed apart from `step_metrics`: its batch and draws scored just before the
    step runs (the weights after two updates), then each node's margin is beta times its mean log-ratio
    gap, its accuracy the share of positive gaps, its share the margin over the sum of |margins|; the
    system's rewards beta times the total log ratios; the loss the mean of -logsigmoid(beta (r_w - r_l))."""
    trainer = Trainer(
        setup["cmp"],
        setup["train"],
        setup["root"] / "by-hand",
        steps=3,
        batch_size=4,
        learning_rate=1e-3,
        learning_rates={"painter": 1e-4},
        **QUIET,
    )
    for _ in range(2):
        trainer.train_step()
    with torch.no_grad():
        out = trainer.log_ratio(trainer.batch(2, 0), trainer.schedule.epoch(2))
    logged = trainer.train_step()
    beta = trainer.config.beta
    assert beta == 0.1 and not trainer.node_betas and not trainer.node_weights
    gaps = {n: (c - r).tolist() for n, (c, r) in out.per_node.items()}
    assert set(gaps) == {"plan", "image[0]", "image[1]"}
    margins = {n: beta * sum(g) / len(g) for n, g in gaps.items()}
    scale = sum(abs(m) for m in margins.values())
    assert min(abs(m) for m in margins.values()) > 1e-6  # every node has moved
    for node, gap in gaps.items():
        assert logged[f"nodes/{node}/margins"] == pytest.approx(margins[node], rel=1e-5, abs=1e-7)
        assert logged[f"nodes/{node}/accuracies"] == sum(x > 0 for x in gap) / len(gap)
        assert logged[f"nodes/{node}/share"] == pytest.approx(margins[node] / scale, rel=1e-5, abs=1e-7)
    chosen, rejected = out.chosen.tolist(), out.rejected.tolist()
    h = [beta * (c - r) for c, r in zip(chosen, rejected, strict=True)]
    assert logged["rewards/chosen"] == pytest.approx(beta * sum(chosen) / 4, rel=1e-5, abs=1e-7)
    assert logged["rewards/rejected"] == pytest.approx(beta * sum(rejected) / 4, rel=1e-5, abs=1e-7)
    assert logged["rewards/margins"] == pytest.approx(sum(h) / 4, rel=1e-5, abs=1e-7)
    assert logged["rewards/accuracies"] == sum(x > 0 for x in h) / 4
    assert logged["loss"] == pytest.approx(sum(math.log1p(math.exp(-x)) for x in h) / 4, rel=1e-5)
    plan_logps = out.policy["plan"]  # the one language-model node
    assert logged["logps/chosen"] == pytest.approx(plan_logps[0].mean().item(), rel=1e-6)
    assert logged["logps/rejected"] == pytest.approx(plan_logps[1].mean().item(), rel=1e-6)


def test_config_files_and_unknown_settings(setup, tmp_path):
    from pydantic import ValidationError

    from compound.train import TrainConfig, read_config

    (tmp_path / "c.toml").write_text(
        "beta = 0.2\nsteps = 3\n[learning_rates]\nwriter = 1e-3\n[lora.painter]\nr = 4\n"
    )
    (tmp_path / "c.yaml").write_text(
        "beta: 0.2\nsteps: 3\nlearning_rates: {writer: 0.001}\nlora: {painter: {r: 4}}\n"
    )
    assert read_config(tmp_path / "c.toml") == read_config(tmp_path / "c.yaml")
    config = TrainConfig(**read_config(tmp_path / "c.toml"))
    assert config.beta == 0.2 and config.lora == {"painter": {"r": 4}}
    with pytest.raises(ValidationError, match="betta"):
        TrainConfig(betta=0.1)
    with pytest.raises(compound.CompoundError, match="no component named pianter"):
        Trainer(setup["cmp"], setup["train"], tmp_path / "x", train=["pianter"], **QUIET)
