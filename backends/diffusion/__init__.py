"""`diffusion`: a text-to-image diffusion model, scored by its ELBO surrogate.

The folder is a diffusers pipeline folder: `model_index.json` naming the
pipeline class (`StableDiffusionPipeline`, `StableDiffusionXLPipeline`,
`StableDiffusion3Pipeline`, `FluxPipeline`, or compound's own small
`CompoundDiffusion` layout), a denoiser (`unet` or `transformer`), a scheduler,
the text encoders and tokenizers of its family, and a `vae` for latent models
(`folder` reads it, `families` knows each family). Classes are taken from
diffusers, transformers and compound only; weights from safetensors only.

Score of an image x given a caption c (docs/method.md, "Diffusion nodes";
Diffusion-DPO, Flow-DPO):

    score(x | c) = -T * mean_k mean_latent || target_k - model(x_t_k, t_k, c) ||^2

with T = 1000 (the training timesteps), K = `timesteps=` draws per image
(default 1), and x_t and the target from the process the model was trained on
(`process`: DDPM's noise, velocity or clean latent; flow matching's velocity
eps - x0 at (1 - sigma) x0 + sigma eps), whatever scheduler the folder ships for
sampling. A node's log ratio, policy minus reference, is T * (l_ref - l_theta).
The K draws come from one seed per (row, node): the chosen and the rejected
image of a pair, and the policy and the reference, see the same t and noise. So the
SysDPO loss of a one-image pair is Diffusion-DPO's: diffusers' SD 1.5 script's
-logsigmoid(beta_dpo * (ref_diff - model_diff)) with beta_dpo = beta * T, and its
SDXL script's -logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)) with
beta_dpo = 2 * beta * T.

Only the denoiser trains (with LoRA if `lora(...)` is given); the text encoders
and the VAE stay frozen and follow the denoiser's device; captions and images
are encoded once.

Component options: `lora(...)`, `reference=`, `batch_size=` (images per forward
pass), `timesteps=` (K), `steps=` (denoising steps when sampling), `guidance_scale=`
(classifier-free guidance when sampling; the pipeline's default unless given,
none for compound's own layout), `resolution=`, `max_sequence_length=` (SD3 and
Flux's T5 prompt length, for scoring and sampling alike; the pipeline's own
default unless given: 256 tokens for SD3, 512 for Flux), `dtype=`,
`gradient_checkpointing=`. A node may override the sampling options and
`timesteps=` for itself. LoRA adapts the denoiser's attention projections
(`to_q`, `to_k`, `to_v`, `to_out.0`), or the layers its class names.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from compound import ir
from compound.backends import BUILTIN
from compound.backends.base import Backend, component_error, int_option, load_failed
from compound.backends.diffusion.families import FAMILIES, Caption, Family, to_image
from compound.backends.diffusion.folder import WEIGHTS, family_of, load_parts, read_index
from compound.backends.diffusion.process import DDPM, Draws, Flow
from compound.backends.loading import checkpointing, dtype_option, lora, resolve, safetensors_only

__all__ = ["Diffusion", "to_image"]


#: Images whose latents a backend keeps (least recently used first out).
IMAGES = 2048


def _image_key(value: Any) -> str:
    """What identifies an image value: its path, or a PIL image's pixels."""
    if isinstance(value, Image.Image):
        digest = hashlib.sha256(value.tobytes() + f"{value.mode}{value.size}".encode()).hexdigest()
        return f"pil:{digest}"
    return f"path:{Path(value).resolve()}"


@dataclass(frozen=True)
class Picture:
    """One image to score: its caption's conditioning, its clean latent, what its geometry adds, and K."""

    caption: Caption
    clean: torch.Tensor
    extra: torch.Tensor | None
    timesteps: int


class Diffusion(Backend):
    spec = BUILTIN["diffusion"]
    #: The attention projections, as diffusers' LoRA and Diffusion-DPO training scripts adapt them; a
    #: denoiser class may name its own (`lora_targets`, as compound's TinyDenoiser does).
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(
        self,
        component: ir.Component,
        model: nn.Module,
        family: Family,
        process: DDPM | Flow,
        reference: str | None = None,
    ):
        super().__init__(component, model, reference)
        self.family = family
        self.process = process
        self.T = process.scale
        self.timesteps = int_option(component, component.options, "timesteps", 1)
        self._captions = lru_cache(maxsize=4096)(family.caption)
        self._draws = lru_cache(maxsize=1024)(process.draw)  # a pair's two images ask for the same draws
        self._images: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()

    @classmethod
    def load(
        cls,
        component: ir.Component,
        root: Path,
        reference: str | None = None,
        trust_remote_code: bool = False,
    ) -> Diffusion:
        source = Path(resolve(component, root))
        for part in WEIGHTS:
            safetensors_only(component, source / part)
        options = component.options
        try:
            index = read_index(source)
            family = FAMILIES[family_of(index)]
            parts = load_parts(
                source,
                index,
                (family.denoiser_part, "scheduler", *family.parts),
                family.optional,
                dtype_option(component),
                trust_remote_code,
            )
            config = parts["scheduler"].config
            process = DDPM(config) if family.process == "ddpm" else Flow(config, family.weighting)
        except (OSError, ValueError, KeyError, TypeError, ImportError, json.JSONDecodeError) as e:
            raise load_failed(
                component,
                str(source),
                "a diffusion model compound can score (a diffusers pipeline folder)",
                e,
            ) from None
        denoiser = parts.pop(family.denoiser_part)
        checkpointing(denoiser, component)
        model = lora(denoiser, component, getattr(type(denoiser), "lora_targets", cls.lora_targets))
        resolution = options.get("resolution")
        guidance = options.get("guidance_scale")
        conditions = family(
            parts,
            denoiser,
            str(index["_class_name"]),
            index,
            resolution=resolution if isinstance(resolution, int) else None,
            sequence=int_option(component, options, "max_sequence_length", 0) or None,
            guidance=float(guidance) if isinstance(guidance, int | float) else None,
        )
        problem = conditions.problem()
        if problem is not None:
            raise component_error(component, f"{source}: {problem}")
        problem = conditions.steps_problem(int_option(component, options, "steps", 50))
        if problem is not None:
            raise component_error(component, problem)
        backend = cls(component, model, conditions, process, reference)
        backend.source = str(source)
        return backend

    # ------------------------------------------------------------ scoring

    def prepare(self, condition: str, value: Any, options: Mapping[str, ir.Value]) -> Picture:
        self.family.follow()
        key = _image_key(value)
        found = self._images.get(key)
        if found is None:  # the VAE runs once per image, not once per step
            pixels, geometry = self.family.pixels(value)
            found = (self.family.latents(pixels), self.family.extra(geometry))
            self._images[key] = found
            if len(self._images) > IMAGES:
                self._images.popitem(last=False)
        self._images.move_to_end(key)
        k = int_option(self.component, options, "timesteps", self.timesteps)
        return Picture(self._captions(condition), found[0], found[1], k)

    def draws(self, seed: int, item: Picture) -> Draws:
        return self._draws(seed, item.timesteps, tuple(item.clean.shape))

    def _score(self, model: nn.Module, items: Sequence[Picture], draws: Sequence[Draws]) -> torch.Tensor:
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        counts = [d.t.numel() for d in draws]
        each = [(item, k) for item, k in zip(items, counts, strict=True) for _ in range(k)]
        clean = torch.stack([item.clean for item, _ in each]).to(device)
        t = torch.cat([d.t for d in draws]).to(device)
        noise = torch.cat([d.noise for d in draws]).to(device)
        noisy = self.process.noisy(clean, noise, t)
        target = self.process.target(clean, noise, t)
        predicted = self.family.denoise(
            model, noisy.to(dtype), t, [item.caption for item, _ in each], [item.extra for item, _ in each]
        )
        mse = (predicted.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        sizes = torch.tensor(counts, device=device)
        owner = torch.repeat_interleave(torch.arange(len(items), device=device), sizes)
        per_item = (
            torch.zeros(len(items), device=device).index_add(0, owner, mse) / sizes
        )  # mean over K draws
        return -self.T * per_item

    # ------------------------------------------------------------ sampling and saving

    def sample(
        self, conditions: Sequence[str], generator: torch.Generator, **options: Any
    ) -> list[Image.Image]:
        """One image per caption, batch by batch (`steps`, `guidance_scale`: the node's, the component's
        or the caller's, as `Backend.sampling_options` merged them)."""
        self.family.follow()
        settings: dict[str, Any] = {k: options[k] for k in ("steps", "guidance_scale") if k in options}
        problem = self.family.steps_problem(int(settings.get("steps", 50)))
        if problem is not None:
            raise self.error(problem)
        images: list[Image.Image] = []
        for start in range(0, len(conditions), self.batch_size):
            images += self.family.sample(conditions[start : start + self.batch_size], generator, settings)
        return images

    def export(self, path: Path, merge: bool = True) -> None:
        """The pipeline folder it was loaded from, with the trained denoiser in place of its `unet` (or
        `transformer`): `DiffusionPipeline.from_pretrained(path)` paints what the trained system paints.
        With `merge=False` a LoRA stays an adapter: the base folder, and its LoRA weights beside it in
        diffusers' format, for `pipe.load_lora_weights(path)`."""
        part = self.family.denoiser_part
        adapter = not merge and hasattr(self.model, "peft_config")
        ignore = shutil.ignore_patterns() if adapter else shutil.ignore_patterns(part)
        shutil.copytree(self.source, path, ignore=ignore, dirs_exist_ok=True)
        if adapter:
            from peft import get_peft_model_state_dict

            peft: Any = self.model
            config = peft.peft_config["default"]
            layers = {
                k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(peft).items()
            }
            saver = type(self.family.diffusers_pipeline()).save_lora_weights
            saver(path, **{f"{part}_lora_layers": layers, f"{part}_lora_adapter_metadata": config.to_dict()})
            return
        merged: Any = self.merged(merge)
        merged.save_pretrained(path / part, safe_serialization=True)
