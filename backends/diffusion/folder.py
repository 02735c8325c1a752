"""Reading a diffusers pipeline folder: which family it is, and its parts, from an allow-list.

`model_index.json` names the pipeline class and, for each part, its library
and class. compound takes classes from diffusers, transformers and itself only
(nothing named in a folder is imported from elsewhere), loads weights from
safetensors files only, and refuses a pipeline class it does not score,
naming it and the ones it does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

#: Pipeline classes compound scores, and the family of each.
PIPELINES = {
    "CompoundDiffusion": "sd",  # compound's own small layout (compound.testing), pixel or latent space
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
#: Where installed packages register model classes a pipeline folder may name (name -> `module:Class`).
MODELS = "compound.models"
#: The parts of a pipeline that hold weights.
WEIGHTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae")


def read_index(folder: Path) -> dict[str, Any]:
    """The folder's `model_index.json`."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    if not isinstance(index, dict):
        raise ValueError("model_index.json is not an object")
    return index


def family_of(index: dict[str, Any]) -> str:
    """The family of a pipeline folder; ValueError naming the class found and the classes supported."""
    name = str(index.get("_class_name", "?"))
    if name not in PIPELINES:
        known = ", ".join(f"{p} ({f})" for p, f in PIPELINES.items())
        raise ValueError(
            f"its model_index.json names the pipeline {name}, which compound cannot score yet "
            f"(supported pipelines: {known})"
        )
    return PIPELINES[name]


def load_parts(
    folder: Path,
    index: dict[str, Any],
    required: Sequence[str],
    optional: Sequence[str],
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """The named parts of the folder (KeyError for a missing required one)."""
    parts: dict[str, Any] = {}
    for name in (*required, *optional):
        entry = index.get(name)
        if not entry or entry[0] is None:
            if name in required:
                raise KeyError(f"model_index.json names no {name}")
            continue
        library, cls_name = entry
        cls = _class(library, cls_name)
        kwargs: dict[str, Any] = {}
        if name in WEIGHTS:
            kwargs = {"dtype": dtype, "use_safetensors": True}
            if name == "vae" and _config(folder / name).get("force_upcast"):
                kwargs["dtype"] = torch.float32  # the VAE of SDXL-class models is unstable in half precision
        if library == "transformers":
            kwargs["trust_remote_code"] = trust_remote_code
        parts[name] = cls.from_pretrained(folder / name, **kwargs)
    return parts


def _config(folder: Path) -> dict[str, Any]:
    try:
        found = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@cache
def _registered() -> dict[str, Any]:
    """Model classes installed packages register, by class name (loaded when a folder names one)."""
    return {ep.name: ep for ep in entry_points(group=MODELS)}


def _class(library: str, name: str) -> Any:
    import diffusers
    import transformers

    if library == "transformers" and name.endswith(("Tokenizer", "TokenizerFast")):
        return transformers.AutoTokenizer
    module = {"diffusers": diffusers, "transformers": transformers}.get(library)
    cls = getattr(module, name, None) if module is not None else None
    registered = _registered().get(name)
    if module is None and registered is not None and registered.value.split(".")[0] == library.split(".")[0]:
        cls = registered.load()
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"model_index.json names {library}.{name}; compound loads diffusers and transformers classes "
            f"and those installed packages register as {MODELS} entry points"
        )
    return cls
