"""What compound's emitted module costs, measured side by side in one run.

(a) forward + backward of the SysDPO loss on the storyboard system (a writer LM
    and a painter denoiser), compound vs a hand-written PyTorch loop computing
    the same quantity from pre-tokenized, pre-encoded tensors. Target <= 1.10.
(b) one training step of a single-LLM system (loss, backward, AdamW), compound
    vs TRL's DPOTrainer with the same GPT-2, batch and frozen reference.
    Target <= 1.0.
(c) mixture of agents with 1, 2, 4, 8 proposers sharing one component: time of
    a forward + backward, all factors of a component batched vs one factor per
    forward pass.

Medians of --steps timed steps after --warmup untimed ones; (a) and (c)
alternate their two contestants step by step, so that machine noise hits both.

    python bench/log_ratio.py [--steps 30] [--batch 8] [--width 64] [--layers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import compound  # noqa: E402
from compound.testing import tiny_causal_lm, tiny_diffusion  # noqa: E402

PLANS = [
    "disc small\ndisc medium\ndisc large",
    "disc large\ndisc medium\ndisc small",
    "sky dark\nsky gray\nsky pale",
    "dot left\ndot middle\ndot right",
]


def median_ms(fn: Callable[[], object], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def alternate(
    a: Callable[[], object], b: Callable[[], object], steps: int, warmup: int
) -> tuple[float, float]:
    """Medians (ms) of a and b, timed in alternation."""
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    for _ in range(steps):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(ta), 1000 * statistics.median(tb)


def pictures(seed: int, count: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L") for _ in range(count)]


# ---------------------------------------------------------------- (a)


def bench_storyboard(
    root: Path, batch: int, steps: int, warmup: int, width: int, layers: int
) -> tuple[float, float]:
    cmp = root / "storyboard.cmp"
    cmp.write_text(
        f'system storyboard\ncomponent writer = causal_lm("{root / "lm"}")\n'
        f'component painter = diffusion("{root / "painter"}")\n'
        'input request : text\nplan : text ~ writer(request, template="Three scenes, {request}:\\n")\n'
        "scene[3] : text = line(plan, i)\nimage[3] : image ~ painter(scene[i])\noutput image\n"
    )
    system = compound.load(cmp)
    chosen = [
        {"request": f"request {k}", "plan": PLANS[k % 4], "image": pictures(k, 3)} for k in range(batch)
    ]
    rejected = [
        {"request": f"request {k}", "plan": PLANS[(k + 1) % 4], "image": pictures(k + 99, 3)}
        for k in range(batch)
    ]
    writer, painter = system.backend("writer"), system.backend("painter")
    lm, lm_ref = writer.model, writer._reference_copy[0]
    unet, unet_ref = painter.model, painter._reference_copy[0]
    tok, sched = writer.tokenizer, painter.process.scheduler

    # The hand-written loop's inputs, prepared once: token ids, masks, caption states, image tensors, draws.
    def tokens(prompt: str, text: str) -> tuple[list[int], int]:
        p = tok(prompt)["input_ids"]
        return tok(prompt + text + tok.eos_token)["input_ids"], len(p)

    seqs = [
        tokens(f"Three scenes, {r['request']}:\n", r["plan"]) for rows in (chosen, rejected) for r in rows
    ]
    width_ = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width_), writer.pad_id)
    mask = torch.zeros((len(seqs), width_), dtype=torch.long)
    comp = torch.zeros((len(seqs), width_), dtype=torch.bool)
    for k, (s, start) in enumerate(seqs):
        ids[k, : len(s)], mask[k, : len(s)], comp[k, start : len(s)] = torch.tensor(s), 1, True
    captions = [line for rows in (chosen, rejected) for r in rows for line in r["plan"].split("\n")]
    hidden = torch.stack([painter.family.caption(c).states for c in captions])
    x0 = torch.stack(
        [painter.family.pixels(img)[0] for rows in (chosen, rejected) for r in rows for img in r["image"]]
    )
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, painter.T, (batch * 3,), generator=g).repeat(2)
    noise = torch.randn((batch * 3, 1, 16, 16), generator=g).repeat(2, 1, 1, 1)
    noisy = sched.add_noise(x0, noise, t)

    def lm_logps(model: torch.nn.Module) -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        lp = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
        return (lp * comp[:, 1:]).sum(1)

    def mse(model: torch.nn.Module) -> torch.Tensor:
        return (model(noisy, t, encoder_hidden_states=hidden).sample - noise).pow(2).flatten(1).mean(1)

    def by_hand() -> None:
        with torch.no_grad():
            ref_lp, ref_mse = lm_logps(lm_ref), mse(unet_ref)
        ratio_lm = lm_logps(lm) - ref_lp
        ratio_img = (painter.T * (ref_mse - mse(unet))).view(2, batch, 3).sum(-1)
        chosen_, rejected_ = ratio_lm.view(2, batch) + ratio_img
        (-F.logsigmoid(0.1 * (chosen_ - rejected_))).mean().backward()

    def ours() -> None:
        out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(0))
        compound.sysdpo_loss(out, beta=0.1).backward()

    hand_ms, ours_ms = alternate(by_hand, ours, steps, warmup)
    return ours_ms, hand_ms


# ---------------------------------------------------------------- (b)


def bench_trl(root: Path, batch: int, steps: int, warmup: int) -> tuple[float, float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    prompts = [f"Question {k}: what comes next?\nAnswer:" for k in range(batch)]
    rows = [(p, f" the number {k} and more", f" nothing at all {k}") for k, p in enumerate(prompts)]
    cmp = root / "single.cmp"
    cmp.write_text(
        f'system single\ncomponent policy = causal_lm("{root / "lm"}")\n'
        "input prompt : text\nanswer : text ~ policy(prompt)\noutput answer\n"
    )
    system = compound.load(cmp)
    chosen = [{"prompt": p, "answer": c} for p, c, _ in rows]
    rejected = [{"prompt": p, "answer": r} for p, _, r in rows]
    optimizer = torch.optim.AdamW(system.parameters(), lr=1e-5)

    def ours() -> None:
        optimizer.zero_grad()
        compound.sysdpo_loss(system.log_ratio(chosen, rejected), beta=0.1).backward()
        optimizer.step()

    ours_ms = median_ms(ours, steps, warmup)

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    data = Dataset.from_list(
        [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in rows] * (steps + warmup)
    )
    args = DPOConfig(
        output_dir=str(root / "trl"),
        beta=0.1,
        per_device_train_batch_size=batch,
        max_steps=steps + warmup,
        learning_rate=1e-5,
        bf16=False,
        report_to=[],
        logging_steps=10**6,
        save_strategy="no",
        max_length=None,
        dataloader_drop_last=True,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(root / "lm"),
        ref_model=AutoModelForCausalLM.from_pretrained(root / "lm"),
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(root / "lm"),
        callbacks=[timer],
    )
    trainer.train()
    return ours_ms, 1000 * statistics.median(timer.times[warmup:])


# ---------------------------------------------------------------- (c)


def bench_moa(root: Path, batch: int, steps: int, warmup: int) -> list[tuple[int, float, float]]:
    results = []
    for proposers in (1, 2, 4, 8):
        cmp = root / f"moa{proposers}.cmp"
        cmp.write_text(
            f'system moa\ncomponent proposer = causal_lm("{root / "lm"}")\n'
            f'component aggregator = causal_lm("{root / "lm"}")\ninput question : text\n'
            f'answer[{proposers}] : text ~ proposer(question, template="Q: {{question}}\\nA:")\n'
            'final : text ~ aggregator(question, answer, template="{question}\\n{answer}\\nBest:")\n'
            "output final\n"
        )
        system = compound.load(cmp)
        chosen = [
            {
                "question": f"{k}+{k}=?",
                "answer": [f" {2 * k + j}" for j in range(proposers)],
                "final": f" {2 * k}",
            }
            for k in range(batch)
        ]
        rejected = [
            {
                "question": f"{k}+{k}=?",
                "answer": [f" {2 * k + j + 1}" for j in range(proposers)],
                "final": f" {2 * k + 1}",
            }
            for k in range(batch)
        ]

        def step(one_at_a_time: bool, system=system, chosen=chosen, rejected=rejected) -> Callable[[], None]:
            def run() -> None:
                for name in system.components:
                    system.backend(name).batch_size = 1 if one_at_a_time else 64
                compound.sysdpo_loss(system.log_ratio(chosen, rejected), beta=0.1).backward()

            return run

        batched, single = alternate(step(False), step(True), steps, warmup)
        results.append((proposers, batched, single))
    return results


def bench_choice(root: Path, batch: int, steps: int, warmup: int) -> list[tuple[int, float, float]]:
    from compound.backends.causal_lm import CausalLM

    shared_logps = CausalLM._shared_logps
    context = " ".join(f"{k} + {k} = {2 * k} ;" for k in range(12))  # about a hundred tokens
    results = []
    for count in (3, 8):
        values = "|".join(f" answer {k}" for k in range(count))
        cmp = root / f"choice{count}.cmp"
        cmp.write_text(
            f'system c\ncomponent lm = causal_lm("{root / "lm"}")\ninput question : text\n'
            f'final : text ~ lm(question, template="{context} {{question}} =", choice="{values}")\n'
            "output final\n"
        )
        system = compound.load(cmp)
        chosen = [{"question": f"{k} + {k}", "final": " answer 0"} for k in range(batch)]
        rejected = [{"question": f"{k} + {k}", "final": " answer 1"} for k in range(batch)]

        def step(whole: bool, system=system, chosen=chosen, rejected=rejected) -> Callable[[], None]:
            def run() -> None:
                # the whole-sequence pass, as a model whose cache cannot be shared takes it
                CausalLM._shared_logps = (lambda *a: None) if whole else shared_logps  # type: ignore[method-assign]
                compound.sysdpo_loss(system.log_ratio(chosen, rejected), beta=0.1).backward()

            return run

        shared, whole = alternate(step(False), step(True), steps, warmup)
        CausalLM._shared_logps = shared_logps  # type: ignore[method-assign]
        results.append((count, shared, whole))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_causal_lm(root / "lm", width=args.width, layers=args.layers)
        tiny_diffusion(root / "painter")
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2 {args.layers} layers x "
            f"{args.width}; batch {args.batch} pairs; medians of {args.steps} steps (ms)\n",
            file=sys.stderr,
        )
        ours, hand = bench_storyboard(root, args.batch, args.steps, args.warmup, args.width, args.layers)
        print(
            f"(a) storyboard fwd+bwd  compound {ours:7.1f}  hand-written {hand:7.1f}  ratio {ours / hand:.2f}"
            "  (target <= 1.10)"
        )
        ours, trl = bench_trl(root, args.batch, args.steps, args.warmup)
        print(
            f"(b) single-LLM step     compound {ours:7.1f}  TRL DPOTrainer {trl:5.1f}  ratio {ours / trl:.2f}"
            "  (target <= 1.00)"
        )
        print("(c) mixture of agents   proposers  batched  one-at-a-time  speed-up")
        for proposers, batched, single in bench_moa(root, args.batch, args.steps, args.warmup):
            print(f"{'':24}{proposers:9d} {batched:8.1f} {single:14.1f} {single / batched:8.1f}x")
        print("(d) a choice node        values   shared  whole sequences  ratio  (target <= 0.60 at 3)")
        for count, shared, whole in bench_choice(root, args.batch, args.steps, args.warmup):
            print(f"{'':24}{count:6d} {shared:8.1f} {whole:16.1f} {shared / whole:6.2f}")


if __name__ == "__main__":
    main()
