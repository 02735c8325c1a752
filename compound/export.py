"""`compound export RUN --out DIR`: each trained component as an ordinary Hugging Face folder.

A causal LM becomes a transformers folder (`AutoModelForCausalLM.from_pretrained`);
a diffusion component becomes its pipeline folder with the trained denoiser as
`unet` or `transformer` (`DiffusionPipeline.from_pretrained(DIR/painter)`).
LoRA adapters are merged into the weights, or with `adapter=True` kept as
adapters: PEFT's for an LLM (`PeftModel.from_pretrained(base, DIR/writer)`),
diffusers' beside the base pipeline for a painter (`pipe.load_lora_weights(DIR/painter)`).
"""

from __future__ import annotations

import json
from pathlib import Path

from compound.diagnostics import error
from compound.loader import load
from compound.train.checkpoint import RUN_FILE


def export(
    run: str | Path, out: str | Path, adapter: bool = False, trust_remote_code: bool = False
) -> list[Path]:
    """Export every component the run trained; return the folders written."""
    final = Path(run) / "final"
    if not (final / RUN_FILE).is_file():
        raise error("config", f"{run} has no final weights ({final / RUN_FILE})")
    meta = json.loads((final / RUN_FILE).read_text())
    lora = {n: {"lora": spec} for n, spec in meta["lora"].items()}
    system = load(meta["system"], weights=final, options=lora, trust_remote_code=trust_remote_code)
    written = []
    for name in meta["trained"]:
        path = Path(out) / name
        system.backend(name).export(path, merge=not adapter)
        written.append(path)
    return written
