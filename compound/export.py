"""`compound export RUN --out DIR`: each trained component as an ordinary Hugging Face folder, and a
system whose text was optimized as its `.cmp` file.

RUN is a `compound train` run, a `compound align` run (its last trained round,
with its last text) or a `compound optimize` run (its text, with the weights it
ran with).

A causal LM becomes a transformers folder (`AutoModelForCausalLM.from_pretrained`);
a diffusion component becomes its pipeline folder with the trained denoiser as
`unet` or `transformer` (`DiffusionPipeline.from_pretrained(DIR/painter)`).
LoRA adapters are merged into the weights, or with `adapter=True` kept as
adapters: PEFT's for an LLM (`PeftModel.from_pretrained(base, DIR/writer)`),
diffusers' beside the base pipeline for a painter (`pipe.load_lora_weights(DIR/painter)`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from compound.diagnostics import error
from compound.io import atomic_folder, atomic_write, damaged, write_checksums
from compound.loader import load, lora_options
from compound.model_folders import with_folders
from compound.run_folder import EXPORTED, RUN_FILE, AlignRun, OptimizeRun, TrainRun, read_object
from compound.text import TEXT_FILE, Text
from compound.text import read as read_text
from compound.text import write as write_text


def export(
    run: str | Path, out: str | Path, adapter: bool = False, trust_remote_code: bool = False
) -> list[Path]:
    """Export every component the run trained, and a system with optimized text as its `.cmp` file
    (OUT/NAME.cmp: the params' optimized values, the trained components' exported folders) with its
    demonstrations beside it (OUT/text.json); return what was written."""
    optimized = OptimizeRun(Path(run))
    if optimized.exists():
        settings = read_object(optimized.settings_file, "the run's settings")
        if not (optimized.final / TEXT_FILE).is_file():
            raise error("config", f"{run} has not finished: no {optimized.final / TEXT_FILE}")
        problem = damaged(optimized.final)
        if problem is not None:
            raise error("config", f"the text in {optimized.final} is damaged: {problem}")
        weights = settings.get("weights")  # the trained weights the text was optimized with go along
        found = export(Path(str(weights)).parent, out, adapter, trust_remote_code) if weights else []
        folders = {p.name: p for p in found if p.is_dir()}
        text = read_text(optimized.final / TEXT_FILE)
        return [*folders.values(), *_text(Path(str(settings["system"])), text, Path(out), folders)]
    aligned = AlignRun(Path(run))
    if aligned.exists():  # the last trained round's components, with the run's last text
        rounds = aligned.trained()
        found = export(rounds[-1].train.path, out, adapter, trust_remote_code) if rounds else []
        if (aligned.path / TEXT_FILE).is_file():
            system = rounds[-1].train.weights().system if rounds else aligned.settings()["system"]
            folders = {p.name: p for p in found if p.is_dir()}
            text = read_text(aligned.path / TEXT_FILE)
            return [*folders.values(), *_text(Path(str(system)), text, Path(out), folders)]
        if not rounds:
            raise error("config", f"{run}: no round has trained yet")
        return found
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
    if (trained.final / TEXT_FILE).is_file():
        folders = {name: Path(out) / name for name in meta.trained}
        written += _text(Path(meta.system), system.text, Path(out), folders)
    return written


def _text(system: Path, text: Text, out: Path, folders: Mapping[str, Path]) -> list[Path]:
    """OUT/NAME.cmp with the text's params (and the given components' folders), OUT/text.json with its
    demonstrations (a `.cmp` file holds no demonstrations: `CompiledSystem.set_text` takes them)."""
    cmp = atomic_write(out / system.name, with_folders(system, folders, text.params, beside=out))
    return [cmp, write_text(out / TEXT_FILE, text)]


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
