"""Scale: a joint SysDPO step and sampling of a storyboard system with shape-real models.

The writer and the painter are models of the real classes built from the published
configurations (Llama-3-8B or Qwen2.5-7B; SDXL or SD3.5-medium) with random weights,
saved with their own `save_pretrained` and loaded by compound as any checkpoint is.
Random weights change no shape, so time and memory are those of the real models.
The system is the paper's storyboard: the writer plans three scenes, the painter
paints each; LoRA on both; one SysDPO step scores a batch of preference pairs
(each a plan and three images) under the policy and the reference.

Each memory setting runs in a fresh process, one after the other, and reports the
median step time after warm-up (pairs/s), peak memory (GPU: the allocator's peak;
CPU: resident set above the process's baseline) and, for the first setting,
sampling throughput (rows/s: a plan and three images). Ratios are to the first
setting, measured side by side in the same run.

    python bench/scale.py                      # GPU: Llama-3-8B + SDXL at 1024 px, bf16, LoRA
    python bench/scale.py --writer qwen2.5-7b --painter sd3.5-medium
    python bench/scale.py --shapes tiny        # the same classes at tiny shapes (the CPU default; CI)
    python bench/scale.py --plan               # parameter counts and weight memory only, no weights made

Without a GPU the real shapes would take hours; `--shapes tiny` is the default there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

#: The published configurations (random weights make no difference to time or memory).
WRITERS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3-8b": (
        "Llama",
        {
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 8192,
            "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5,
        },
    ),
    "qwen2.5-7b": (
        "Qwen2",
        {
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
        },
    ),
}
TINY_WRITER: dict[str, Any] = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
CLIP_G = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20}
T5_XXL = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "vocab_size": 32128}
VAE = {
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "sample_size": 1024,
}
SDXL_UNET = {
    "sample_size": 128,
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [5, 10, 20],
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
    "cross_attention_dim": 2048,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
SD35_MEDIUM = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 384,
    "dual_attention_layers": list(range(13)),
    "qk_norm": "rms_norm",
}
#: Settings, each on top of the one before it: component options and the reference strategy.
SETTINGS: dict[str, tuple[dict[str, str], str]] = {
    "bf16, LoRA, adapter reference": ({"dtype": '"bfloat16"'}, "adapter"),
    "+ gradient checkpointing": ({"dtype": '"bfloat16"', "gradient_checkpointing": "true"}, "adapter"),
    "+ cached reference": ({"dtype": '"bfloat16"', "gradient_checkpointing": "true"}, "cached"),
}
SYSTEM = """system storyboard
component writer  = causal_lm("writer", lora(r=16){writer})
component painter = diffusion("painter", lora(r=16){painter})
input request : text
plan     : text  ~ writer(request, template="Three scenes, {{request}}:\\n", max_new_tokens={tokens})
scene[3] : text  = line(plan, i)
image[3] : image ~ painter(scene[i])
output image
"""


def memory_mb(baseline: float = 0.0) -> float:
    """Peak memory so far: the GPU allocator's, else the process's resident set (above `baseline`)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline


def make_writer(path: Path, name: str, tiny: bool) -> None:
    """A causal LM of the real class (random weights) and a byte-level tokenizer, saved as a checkpoint."""
    import transformers

    from compound.testing import byte_tokenizer

    family, config = WRITERS[name]
    tokenizer = byte_tokenizer(["Three scenes, a disc growing:\nsmall\nlarge\n"], vocab_size=300)
    settings = {**config, **(TINY_WRITER if tiny else {})}
    settings |= {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    with _building():
        model = getattr(transformers, f"{family}ForCausalLM")(
            getattr(transformers, f"{family}Config")(**settings)
        )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def make_painter(path: Path, name: str, tiny: bool) -> None:
    """An SDXL or SD3.5 pipeline of the real classes (random weights), saved with its `save_pretrained`."""
    from compound import testing as small

    if tiny:
        (small.tiny_sdxl if name == "sdxl" else small.tiny_sd3)(path)
        return
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    tokenizer = small.clip_tokenizer()

    def clip(sizes: dict[str, int], projection: bool) -> Any:
        config = CLIPTextConfig(**sizes, projection_dim=sizes["hidden_size"], vocab_size=49408)
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)

    with _building():
        if name == "sdxl":
            pipeline: Any = StableDiffusionXLPipeline(
                vae=AutoencoderKL(**VAE, latent_channels=4, scaling_factor=0.13025, force_upcast=True),
                text_encoder=clip(CLIP_L, projection=False),
                text_encoder_2=clip(CLIP_G, projection=True),
                tokenizer=tokenizer,
                tokenizer_2=small.clip_tokenizer(pad="!"),
                unet=UNet2DConditionModel(**SDXL_UNET),
                scheduler=EulerDiscreteScheduler(
                    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
                ),
                add_watermarker=False,
            )
        else:
            pipeline = StableDiffusion3Pipeline(
                transformer=SD3Transformer2DModel(**SD35_MEDIUM),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                vae=AutoencoderKL(
                    **VAE,
                    latent_channels=16,
                    use_quant_conv=False,
                    use_post_quant_conv=False,
                    scaling_factor=1.5305,
                    shift_factor=0.0609,
                ),
                text_encoder=clip(CLIP_L, projection=True),
                text_encoder_2=clip(CLIP_G, projection=True),
                text_encoder_3=T5EncoderModel(T5Config(**T5_XXL, feed_forward_proj="gated-gelu")),
                tokenizer=tokenizer,
                tokenizer_2=small.clip_tokenizer(),
                tokenizer_3=small.t5_tokenizer(),
            )
    pipeline.save_pretrained(path, safe_serialization=True)


def _device() -> Any:
    """Where to build: the GPU when there is one (random init of billions of weights is slow on a CPU)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _building() -> Iterator[None]:
    """Build in bfloat16 on the build device: a float32 Llama-3-8B alone would take 32 GB."""
    import torch

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with _device():
            yield
    finally:
        torch.set_default_dtype(dtype)


def data(root: Path, pairs: int, resolution: int, tokens: int) -> Path:
    """Preference pairs of the storyboard: a plan of about `tokens` tokens and three random images each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(exist_ok=True)
    rows = []
    for k in range(pairs):
        sides = {}
        for side in ("chosen", "rejected"):
            files = []
            for j in range(3):
                pixels = rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)
                files.append(f"images/{k}{side[0]}{j}.png")
                Image.fromarray(pixels).save(root / files[-1])
            line = "".join(rng.choice(list("abcdefgh ")) for _ in range(max(1, tokens // 3)))
            sides[side] = {"plan": f"{line}\n{line}\n{line}", "image": files}
        rows.append({"input": {"request": f"a scene {k}"}, **sides})
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def worker(setting: str, root: Path, args: argparse.Namespace) -> dict[str, float]:
    """Train `args.steps` steps in this process (and sample, for the first setting)."""
    import torch

    import compound
    from compound.train import Trainer

    baseline = memory_mb()
    options, reference = SETTINGS[setting]
    painter = {**options, "resolution": str(args.resolution)}
    (root / "storyboard.cmp").write_text(
        SYSTEM.format(
            writer="".join(f", {k}={v}" for k, v in options.items()),
            painter="".join(f", {k}={v}" for k, v in painter.items()),
            tokens=args.tokens,
        )
    )
    trainer = Trainer(
        root / "storyboard.cmp",
        root / "pairs.jsonl",
        root / f"run-{list(SETTINGS).index(setting)}",
        steps=args.steps,
        batch_size=args.batch,
        learning_rate=1e-5,
        reference=reference,
        quiet=True,
        report_to=[],
        save_every=0,
    )
    times = []
    while trainer.step < trainer.total_steps:
        start = time.perf_counter()
        trainer.train_step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    found = {"step_s": statistics.median(times[min(2, len(times) - 1) :]), "peak_mb": memory_mb(baseline)}
    if setting == next(iter(SETTINGS)):
        del trainer
        system = compound.load(root / "storyboard.cmp").to(_device())
        requests = [{"request": f"a scene {k}"} for k in range(args.batch)]
        start = time.perf_counter()
        system.sample(requests, generator=torch.Generator().manual_seed(0), steps=args.sample_steps)
        found["sample_s"] = (time.perf_counter() - start) / len(requests)
    return found


def plan(writer: str, painter: str) -> dict[str, int]:
    """Print and return the parameter counts of the real shapes and their bf16 weight memory, built on the
    meta device (no memory)."""
    import torch
    import transformers
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    family, config = WRITERS[writer]
    with torch.device("meta"):
        parts: dict[str, Callable[[], Any]] = {
            writer: lambda: getattr(transformers, f"{family}ForCausalLM")(
                getattr(transformers, f"{family}Config")(**config)
            ),
            "CLIP-L": lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L, vocab_size=49408)),
            "CLIP-G": lambda: CLIPTextModel(CLIPTextConfig(**CLIP_G, vocab_size=49408)),
        }
        if painter == "sdxl":
            parts["SDXL UNet"] = lambda: UNet2DConditionModel(**SDXL_UNET)
        else:
            parts["SD3.5-medium MMDiT"] = lambda: SD3Transformer2DModel(**SD35_MEDIUM)
            parts["T5-XXL encoder"] = lambda: T5EncoderModel(
                T5Config(**T5_XXL, feed_forward_proj="gated-gelu")
            )
        print(f"{'part':24}{'parameters':>14}{'bf16 weights':>15}")
        counts = {name: sum(p.numel() for p in build().parameters()) for name, build in parts.items()}
    for name, count in {**counts, "total": sum(counts.values())}.items():
        print(f"{name:24}{count / 1e9:13.2f}B{2 * count / 2**30:12.1f} GiB")
    return counts


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writer", choices=list(WRITERS), default="llama3-8b")
    parser.add_argument("--painter", choices=["sdxl", "sd3.5-medium"], default="sdxl")
    parser.add_argument(
        "--shapes", choices=["real", "tiny"], default="real" if torch.cuda.is_available() else "tiny"
    )
    parser.add_argument("--plan", action="store_true", help="print parameter counts and weight memory only")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2, help="preference pairs per step")
    parser.add_argument("--tokens", type=int, default=96, help="tokens of a plan (about)")
    parser.add_argument("--resolution", type=int, help="image side (default 1024 real, 32 tiny)")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    tiny = args.shapes == "tiny"
    args.resolution = args.resolution or (32 if tiny else 1024)
    if args.plan:
        plan(args.writer, args.painter)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root), args)))
        return
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_writer(root / "writer", args.writer, tiny)
        make_painter(root / "painter", args.painter, tiny)
        data(root, 2 * args.batch, args.resolution, args.tokens)
        for setting in SETTINGS:
            done = subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--worker", setting, "--root", tmp],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"{setting} failed:\n{done.stderr[-3000:]}")
            results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"{args.writer} + {args.painter} classes, {args.shapes} shapes, on {where}: storyboard (a plan "
        f"of ~{args.tokens} tokens, 3 images of {args.resolution} px), LoRA r=16 on both, "
        f"batch {args.batch} pairs, "
        f"{args.steps} steps (median after 2)"
    )
    first = next(iter(results.values()))
    print(f"{'setting':36}{'pairs/s':>9}{'peak MiB':>11}{'speed':>8}{'memory':>8}")
    for name, r in results.items():
        print(
            f"{name:36}{args.batch / r['step_s']:9.3f}{r['peak_mb']:11.0f}"
            f"{first['step_s'] / r['step_s']:7.2f}x{r['peak_mb'] / first['peak_mb']:7.2f}x"
        )
    print(f"sampling: {1 / first['sample_s']:.3f} rows/s ({args.sample_steps} denoising steps per image)")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results})
        )


if __name__ == "__main__":
    main()
