"""`compound export RUN --out DIR`: each trained component as an ordinary Hugging Face folder.

A causal LM becomes a transformers folder (`AutoModelForCausalLM.from_pretrained`);
a diffusion component becomes its pipeline folder with the trained denoiser as
`unet` or `transformer` (`DiffusionPipeline.from_pretrained(DIR/painter)`).
LoRA adapters are merged into the weights, or with `adapter=True` kept as
adapters: PEFT's for an LLM (`PeftModel.from_pretrained(base, DIR/writer)`),
diffusers' beside the base pipeline for a painter (`pipe.load_lora_weights(DIR/painter)`).
"""

from __future__ import annotations

from pathlib import Path

from compound.diagnostics import error
from compound.loader import load, lora_options
from compound.run_folder import RUN_FILE, TrainRun


def export(
    run: str | Path, out: str | Path, adapter: bool = False, trust_remote_code: bool = False
) -> list[Path]:
    """Export every component the run trained; return the folders written."""
    trained = TrainRun(Path(run))
    if not trained.finished():
        raise error("config", f"{run} has no final weights ({trained.final / RUN_FILE})")
    meta = trained.weights()
    system = load(
        meta.system,
        weights=trained.final,
        options=lora_options(meta.lora),
        trust_remote_code=trust_remote_code,
    )
    written = []
    for name in meta.trained:
        path = Path(out) / name
        system.backend(name).export(path, merge=not adapter)
        written.append(path)
    return written
