"""Pipeline families: how a caption conditions the denoiser, what an image adds, and how to sample.

- `SD` (Stable Diffusion 1.x/2.x, and compound's own small layout): one CLIP
  text encoder's last hidden states;
- `SDXL`: both text encoders' penultimate hidden states side by side, the
  second one's pooled projection, and the micro-conditioning time ids
  (original size, crop, target size), as `StableDiffusionXLPipeline` and
  diffusers' SDXL Diffusion-DPO script build them.

Images are resized so that their short side is the model's resolution and
centre-cropped (SDXL's time ids record the original size and the crop);
latents are the VAE's mean, scaled: deterministic, so a run encodes each image
once. Sampling goes through the family's own diffusers pipeline, so an image is
the one `DiffusionPipeline.from_pretrained(folder)(prompt, generator=...)`
paints; compound's own layout samples with DDIM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn


@dataclass(frozen=True)
class Caption:
    """What a caption gives the denoiser: hidden states [L, D], and a pooled embedding [P] for some."""

    states: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass(frozen=True)
class Geometry:
    """Where a model-sized image came from: its original (height, width) and its crop's (top, left)."""

    size: tuple[int, int]
    crop: tuple[int, int]


class Family:
    """A pipeline family: its parts, its conditioning, its sampler."""

    name: ClassVar[str]
    #: Parts besides the denoiser (`unet`) and the scheduler.
    parts: ClassVar[tuple[str, ...]] = ("text_encoder", "tokenizer")
    optional: ClassVar[tuple[str, ...]] = ("vae",)

    def __init__(self, parts: dict[str, Any], pipeline: str, index: dict[str, Any]):
        self.pipeline = pipeline
        self.index = index
        self.scheduler = parts["scheduler"]
        self.vae: Any = parts.get("vae")
        if self.vae is not None:
            self.vae.requires_grad_(False).eval()
        self.encoders: list[Any] = [
            parts[n].requires_grad_(False).eval() for n in self.parts if "encoder" in n
        ]
        self.tokenizers: list[Any] = [parts[n] for n in self.parts if "tokenizer" in n]

    # ------------------------------------------------------------ images

    def channels(self, denoiser: Any) -> int:
        return int((self.vae if self.vae is not None else denoiser).config.in_channels)

    def resolution(self, denoiser: Any) -> int:
        size = int(denoiser.config.sample_size)
        return size * 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else size

    def pixels(self, value: Any, denoiser: Any) -> tuple[torch.Tensor, Geometry]:
        """An image (PIL or a path) as a [C, H, W] tensor in [-1, 1] at the model's resolution: the short
        side resized to it, then centre-cropped."""
        side = self.resolution(denoiser)
        image = value if isinstance(value, Image.Image) else Image.open(value)
        image = image.convert("L" if self.channels(denoiser) == 1 else "RGB")
        width, height = image.size
        if (width, height) != (side, side):
            scale = side / min(width, height)
            resized = (max(side, round(width * scale)), max(side, round(height * scale)))
            image = image.resize(resized, Image.Resampling.BICUBIC)
        top, left = (image.size[1] - side) // 2, (image.size[0] - side) // 2
        image = image.crop((left, top, left + side, top + side))
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)), Geometry((height, width), (top, left))

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees of an image: the VAE's scaled mean latent, or the pixels themselves."""
        if self.vae is None:
            return pixels
        device, dtype = next(self.vae.parameters()).device, next(self.vae.parameters()).dtype
        latent = self.vae.encode(pixels[None].to(device, dtype)).latent_dist.mean
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latent - shift) * self.vae.config.scaling_factor)[0].float()

    # ------------------------------------------------------------ conditioning

    def caption(self, text: str) -> Caption:
        """A caption's conditioning (computed once per caption: the text encoders are frozen)."""
        raise NotImplementedError

    def extra(self, geometry: Geometry, resolution: int) -> torch.Tensor | None:
        """What an image's geometry adds to the conditioning (SDXL's time ids); None for most families."""
        return None

    def denoise(
        self,
        model: nn.Module,
        noisy: torch.Tensor,
        t: torch.Tensor,
        captions: Sequence[Caption],
        extras: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        """The model's prediction for a batch of noisy latents."""
        raise NotImplementedError

    def _ids(self, tokenizer: Any, text: str, device: torch.device) -> torch.Tensor:
        limit = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)
        ids: torch.Tensor = tokenizer(
            [text], padding="max_length", max_length=limit, truncation=True, return_tensors="pt"
        )["input_ids"]
        return ids.to(device)

    # ------------------------------------------------------------ sampling

    def sample(
        self,
        denoiser: nn.Module,
        captions: Sequence[str],
        generator: torch.Generator,
        options: dict[str, Any],
    ) -> list[Image.Image]:
        """One image per caption, through the family's diffusers pipeline (`steps`, `guidance_scale`:
        the pipeline's defaults unless given)."""
        pipeline = self.diffusers_pipeline(denoiser)
        settings: dict[str, Any] = {}
        if "steps" in options:
            settings["num_inference_steps"] = int(options["steps"])
        if "guidance_scale" in options:
            settings["guidance_scale"] = float(options["guidance_scale"])
        with torch.no_grad():
            out = pipeline(prompt=list(captions), generator=generator, output_type="pil", **settings)
        return list(out.images)

    def diffusers_pipeline(self, denoiser: nn.Module) -> Any:
        raise NotImplementedError


class SD(Family):
    """Stable Diffusion 1.x/2.x: one CLIP text encoder's last hidden states."""

    name = "sd"

    def caption(self, text: str) -> Caption:
        encoder = self.encoders[0]
        ids = self._ids(self.tokenizers[0], text, next(encoder.parameters()).device)
        with torch.no_grad():
            return Caption(encoder(ids)[0][0])

    def denoise(
        self,
        model: nn.Module,
        noisy: torch.Tensor,
        t: torch.Tensor,
        captions: Sequence[Caption],
        extras: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        states = torch.stack([c.states for c in captions]).to(noisy.device)
        predicted: torch.Tensor = model(noisy, t, encoder_hidden_states=states).sample
        return predicted

    def sample(
        self,
        denoiser: nn.Module,
        captions: Sequence[str],
        generator: torch.Generator,
        options: dict[str, Any],
    ) -> list[Image.Image]:
        if self.pipeline != "CompoundDiffusion":
            return super().sample(denoiser, captions, generator, options)
        return self._ddim(denoiser, captions, generator, options)

    def diffusers_pipeline(self, denoiser: nn.Module) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.encoders[0],
            tokenizer=self.tokenizers[0],
            unet=denoiser,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @torch.no_grad()
    def _ddim(
        self,
        denoiser: nn.Module,
        captions: Sequence[str],
        generator: torch.Generator,
        options: dict[str, Any],
    ) -> list[Image.Image]:
        """compound's own layout: DDIM from the training scheduler's config, guidance only when asked."""
        from diffusers import DDIMScheduler

        steps, guidance = int(options.get("steps", 50)), float(options.get("guidance_scale", 1.0))
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        device = next(denoiser.parameters()).device
        config: Any = getattr(denoiser, "config", None)
        caption = torch.stack([self.caption(c).states for c in captions]).to(device)
        shape = (len(captions), config.in_channels, config.sample_size, config.sample_size)
        x = torch.randn(shape, generator=generator).to(device)
        empty = self.caption("").states[None].expand_as(caption).to(device)
        for t in scheduler.timesteps:
            step = t.to(device).expand(len(captions))
            out = denoiser(x, step, encoder_hidden_states=caption).sample
            if guidance != 1.0:
                plain = denoiser(x, step, encoder_hidden_states=empty).sample
                out = plain + guidance * (out - plain)
            x = scheduler.step(out, t, x).prev_sample
        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        return [to_image(img) for img in x.clamp(-1, 1).cpu()]


class SDXL(Family):
    """Stable Diffusion XL: two text encoders, a pooled embedding and micro-conditioning time ids."""

    name = "sdxl"
    parts = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")

    def caption(self, text: str) -> Caption:
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.encoders, strict=True):
            ids = self._ids(tokenizer, text, next(encoder.parameters()).device)
            with torch.no_grad():
                out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2][0])
            if out[0].ndim == 2:  # the projection model (text_encoder_2): its pooled text embedding
                pooled = out[0][0]
        return Caption(torch.cat(states, dim=-1), pooled)

    def extra(self, geometry: Geometry, resolution: int) -> torch.Tensor:
        """The time ids: original size, crop top-left, target size (diffusers' `_get_add_time_ids`)."""
        return torch.tensor([*geometry.size, *geometry.crop, resolution, resolution], dtype=torch.float32)

    def denoise(
        self,
        model: nn.Module,
        noisy: torch.Tensor,
        t: torch.Tensor,
        captions: Sequence[Caption],
        extras: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        device = noisy.device
        states = torch.stack([c.states for c in captions]).to(device)
        pooled = torch.stack([c.pooled for c in captions if c.pooled is not None]).to(device)
        time_ids = torch.stack([e for e in extras if e is not None]).to(device)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        predicted: torch.Tensor = model(
            noisy, t, encoder_hidden_states=states, added_cond_kwargs=added
        ).sample
        return predicted

    def diffusers_pipeline(self, denoiser: nn.Module) -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=self.encoders[0],
            text_encoder_2=self.encoders[1],
            tokenizer=self.tokenizers[0],
            tokenizer_2=self.tokenizers[1],
            unet=denoiser,
            scheduler=self.scheduler,
            force_zeros_for_empty_prompt=bool(self.index.get("force_zeros_for_empty_prompt", True)),
            add_watermarker=False,
        )


FAMILIES: dict[str, type[Family]] = {family.name: family for family in (SD, SDXL)}


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A [C, H, W] tensor in [-1, 1] as a PIL image (grayscale for one channel)."""
    array = ((tensor.float().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return (
        Image.fromarray(array[0], mode="L")
        if array.shape[0] == 1
        else Image.fromarray(array.transpose(1, 2, 0))
    )
