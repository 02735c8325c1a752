"""Training throughput and memory: a single-LLM system vs TRL's DPOTrainer, and adapter vs copy references.

Each contestant runs in a fresh Python process (so that peak memory is its own)
on the same GPT-2, data, batch and LoRA settings, one after the other in one
run of this script:

- compound, LoRA r=8, reference = the adapter-disabled model;
- TRL's DPOTrainer, the same LoRA through `peft_config` (its reference: the
  adapter-disabled model too);
- compound with reference = a frozen copy.

It prints steps per second (median step time after warm-up) and peak resident
memory above the process's baseline after imports, and their ratios.

    python bench/train.py [--steps 30] [--batch 8] [--width 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

PROMPTS = [f"Question {k}: what comes after {k}?\nAnswer:" for k in range(64)]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data(root: Path) -> Path:
    path = root / "prefs.jsonl"
    rows = [
        {"prompt": p, "chosen": f" {k + 1}, then {k + 2}", "rejected": f" nothing at all {k}"}
        for k, p in enumerate(PROMPTS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def worker(kind: str, root: Path, steps: int, batch: int) -> dict[str, float]:
    """Train `steps` steps; return the median step time and the peak memory above the baseline."""
    import torch  # imports count towards the baseline, not the contestant
    import transformers  # noqa: F401

    if kind == "trl":
        import trl  # noqa: F401
    else:
        import compound.train  # noqa: F401
    torch.set_num_threads(torch.get_num_threads())
    baseline = rss_mb()
    times: list[float] = []
    if kind == "trl":
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import DPOConfig, DPOTrainer

        class Timer(TrainerCallback):
            def on_step_begin(self, *args, **kwargs):
                self.start = time.perf_counter()

            def on_step_end(self, *args, **kwargs):
                times.append(time.perf_counter() - self.start)

        rows = [json.loads(line) for line in (root / "prefs.jsonl").read_text().splitlines()]
        args = DPOConfig(
            output_dir=str(root / "trl"),
            beta=0.1,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-4,
            bf16=False,
            report_to=[],
            logging_steps=10**6,
            save_strategy="no",
            max_length=None,
            disable_tqdm=True,
            lr_scheduler_type="linear",
        )
        lora = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["c_attn"], task_type="CAUSAL_LM"
        )
        DPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(root / "lm"),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(root / "lm"),
            peft_config=lora,
            callbacks=[Timer()],
        ).train()
    else:
        from compound.train import Trainer

        reference = "adapter" if kind == "compound" else "copy"
        trainer = Trainer(
            root / "single.cmp",
            root / "prefs.jsonl",
            root / f"run-{kind}",
            steps=steps,
            batch_size=batch,
            learning_rate=1e-4,
            reference=reference,
            quiet=True,
            report_to=[],
        )
        while trainer.step < trainer.total_steps:
            start = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - start)
    warm = times[min(3, len(times) - 1) :]
    return {"step_s": statistics.median(warm), "peak_mb": rss_mb() - baseline}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root), args.steps, args.batch)))
        return
    from compound.testing import tiny_causal_lm

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_causal_lm(root / "lm", width=args.width, layers=args.layers, heads=4, vocab_size=512)
        data(root)
        (root / "single.cmp").write_text(
            f'system single\ncomponent policy = causal_lm("{root / "lm"}", '
            'lora(r=8, alpha=16, target_modules="c_attn"))\n'
            "input prompt : text\nanswer : text ~ policy(prompt)\noutput answer\n"
        )
        results = {}
        for kind in ("compound", "trl", "copy"):
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    kind,
                    "--root",
                    str(root),
                    "--steps",
                    str(args.steps),
                    "--batch",
                    str(args.batch),
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
            results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    c, t, k = results["compound"], results["trl"], results["copy"]
    print(
        f"GPT-2 {args.layers} layers x {args.width}, LoRA r=8 on c_attn, batch {args.batch} pairs, "
        f"{args.steps} steps; medians after 3 warm-up steps"
    )
    print(f"{'':28}{'steps/s':>9}{'peak MB':>10}")
    for name, r in (
        ("compound (adapter ref)", c),
        ("TRL DPOTrainer (adapter ref)", t),
        ("compound (copy ref)", k),
    ):
        print(f"{name:28}{1 / r['step_s']:9.2f}{r['peak_mb']:10.1f}")
    print(
        f"compound / TRL: speed {t['step_s'] / c['step_s']:.2f}x (target >= 1), "
        f"memory {c['peak_mb'] / t['peak_mb']:.2f}x (target <= 1)"
    )
    print(f"adapter / copy reference: memory {c['peak_mb'] / k['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
