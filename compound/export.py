"""`compound export RUN --out DIR`: each trained component as an ordinary Hugging Face folder.

A causal LM becomes a transformers folder (`AutoModelForCausalLM.from_pretrained`);
a diffusion component becomes its pipeline folder with the trained denoiser as
`unet` or `transformer` (`DiffusionPipeline.from_pretrained(DIR/painter)`).
LoRA adapters are merged into the weights, or with `adapter=True` kept as
adapters: PEFT's for an LLM (`PeftModel.from_pretrained(base, DIR/writer)`),
diffusers' beside the base pipeline for a painter (`pipe.load_lora_weights(DIR/painter)`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from compound.diagnostics import error
from compound.io import atomic_folder, atomic_write, damaged, write_checksums
from compound.loader import load, lora_options
from compound.run_folder import EXPORTED, RUN_FILE, TrainRun


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


def export_once(run: str | Path, target: Path, trust_remote_code: bool = False) -> dict[str, Path]:
    """The run's trained components exported merged into `target` (align's round exports, credit's), each
    component's folder by name: written whole with checksums, and reused while they hold; an export
    that was cut short or changed since is written again."""
    if (target / EXPORTED).is_file():
        problem = damaged(target)
        if problem is None:
            return {p.name: p for p in sorted(target.iterdir()) if p.is_dir()}
        print(f"{target} is damaged ({problem}): exporting it again", file=sys.stderr, flush=True)
    with atomic_folder(target) as tmp:
        export(run, tmp, trust_remote_code=trust_remote_code)
        write_checksums(tmp)
        atomic_write(tmp / EXPORTED, "")
    return {p.name: p for p in sorted(target.iterdir()) if p.is_dir()}
