"""Pretrain the progression task's base models: a tiny writer and a tiny painter, saved like real checkpoints.

The writer is a GPT-2 (2 layers, 64 wide) with a byte-level BPE tokenizer fit to
the task's texts, trained on request -> intent and intent -> plan pairs (half
each; plans from `progression.plan`, so they follow the intent only some of the
time). The painter is the project's `TinyDenoiser` with a one-layer CLIP text
encoder, trained together on captions -> images from `progression.painting`
(jittered levels, unreliable synonyms), epsilon prediction under a 1000-step
cosine DDPM schedule, with offset noise (`OFFSET_NOISE`) and sampled with
trailing timesteps: without them a small model cannot set an image's mean
brightness (the sky's levels came out compressed towards gray, each with twice
the spread of its data). Both are saved with `save_pretrained` and load through
`compound.load` like any checkpoint.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from compound_demos import progression as task
from rich.progress import Progress

from compound.testing import byte_tokenizer, clip_text_encoder, gpt2, save_pipeline

OFFSET_NOISE = 0.1  # per-image shift of the training noise (Guttenberg 2023): lets the model move the mean
MIN_PRETRAIN_STEPS = 4  # one-cycle schedules need a warm-up step and at least two to decay


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, steps: int, warmup: float) -> Any:
    """Warm up over `warmup` of the steps (at least one), then anneal: the pretraining schedule."""
    pct = max(warmup, 2 / steps)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=pct)


def pretrain(
    out: str | Path,
    writer_steps: int,
    painter_steps: int,
    seed: int = 0,
    quiet: bool = False,
) -> Path:
    """Pretrain both base models into out/writer and out/painter; returns `out`."""
    out = Path(out)
    with Progress(disable=quiet) as progress:
        pretrain_writer(out / "writer", writer_steps, seed, progress)
        pretrain_painter(out / "painter", painter_steps, seed, progress)
    (out / "pretrain.json").write_text(
        json.dumps(
            {
                "writer_steps": writer_steps,
                "painter_steps": painter_steps,
                "seed": seed,
                "jitter": task.JITTER,
                "offset_noise": OFFSET_NOISE,
                "p_follow": task.P_FOLLOW,
                "p_habit": task.P_HABIT,
            }
        )
    )
    return out


def pretrain_writer(out: Path, steps: int, seed: int, progress: Progress, batch: int = 128) -> None:
    pool = task.requests("train") + task.requests("held")

    def example(rng: random.Random) -> tuple[str, str]:
        request = rng.choice(pool)
        if rng.random() < 0.5:
            return task.PROMPT.format(request=request.text), task.intent(request.attribute, request.direction)
        attribute, direction = task.BY_NAME[request.attribute], rng.choice((1, -1))
        prompt = task.PLAN_PROMPT.format(intent=task.intent(attribute.name, direction))
        return prompt, task.plan(attribute, direction, rng)

    tokenizer = byte_tokenizer(task.corpus(), vocab_size=512)
    train_lm(out, tokenizer, example, steps, seed, progress, "the writer", batch=batch)


def train_lm(
    out: Path,
    tokenizer: Any,
    example: Callable[[random.Random], tuple[str, str]],
    steps: int,
    seed: int,
    progress: Progress,
    name: str,
    batch: int = 128,
    positions: int = 96,
    lr: float = 3e-3,
) -> None:
    """Train a GPT-2 (2 layers, 64 wide, no dropout) on (prompt, completion) examples drawn by `example`
    (loss on the completion and EOS only), and save it with its tokenizer to `out`."""
    pad = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = gpt2(tokenizer, positions=positions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = one_cycle(optimizer, lr, steps, 0.1)
    rng = random.Random(seed)
    task_id = progress.add_task(f"pretraining {name}", total=steps)
    model.train()
    for _ in range(steps):
        ids, labels = [], []
        for _ in range(batch):
            prompt_text, completion = example(rng)
            prompt = tokenizer(prompt_text)["input_ids"]
            target = tokenizer(completion + tokenizer.eos_token)["input_ids"]
            ids.append(prompt + target)
            labels.append([-100] * len(prompt) + target)
        width = max(map(len, ids))
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
        target = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=target).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        progress.update(task_id, advance=1, description=f"pretraining {name} (loss {loss.item():.3f})")
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def pretrain_painter(
    out: Path, steps: int, seed: int, progress: Progress, batch: int = 128, pool_size: int = 24_000
) -> None:
    from diffusers import DDPMScheduler

    from compound.testing.denoiser import TinyDenoiser

    torch.manual_seed(seed)
    tokenizer = byte_tokenizer(task.captions(), vocab_size=320, max_length=8)
    encoder = clip_text_encoder(tokenizer, width=32, positions=8)
    denoiser = TinyDenoiser(
        sample_size=task.SIZE, in_channels=1, out_channels=1, channels=(32, 64), cross_attention_dim=32
    )
    scheduler: Any = DDPMScheduler(  # trailing: sampling starts from pure noise (t = 999), not from t = 950
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        timestep_spacing="trailing",
    )
    rng = np.random.default_rng(seed)
    texts = task.captions()
    which = rng.integers(0, len(texts), pool_size)
    images = torch.from_numpy(
        np.stack([np.asarray(task.painting(texts[k], rng), dtype=np.float32) / 127.5 - 1 for k in which])
    )[:, None]
    ids = tokenizer(texts, padding="max_length", max_length=8, truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    params = list(denoiser.parameters()) + list(encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    schedule = one_cycle(optimizer, 2e-3, steps, 0.05)
    generator = torch.Generator().manual_seed(seed)
    task_id = progress.add_task("pretraining the painter", total=steps)
    for _ in range(steps):
        pick = torch.randint(0, pool_size, (batch,), generator=generator)
        clean = images[pick]
        hidden = encoder(ids[torch.from_numpy(which)[pick]])[0]
        noise = torch.randn(clean.shape, generator=generator)
        noise = noise + OFFSET_NOISE * torch.randn((batch, 1, 1, 1), generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        predicted = denoiser(scheduler.add_noise(clean, noise, t), t, encoder_hidden_states=hidden).sample
        loss = (predicted - noise).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        progress.update(task_id, advance=1, description=f"pretraining the painter (loss {loss.item():.4f})")
    save_pipeline(out, denoiser, ["compound", "TinyDenoiser"], scheduler, encoder, tokenizer)
