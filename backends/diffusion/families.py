"""Pipeline families: how a caption conditions the denoiser, what an image adds, and how to sample.

- `SD` (Stable Diffusion 1.x/2.x, and compound's own small layout): one CLIP
  text encoder's last hidden states;
- `SDXL`: both text encoders' penultimate hidden states side by side, the
  second one's pooled projection, and the micro-conditioning time ids
  (original size, crop, target size), as `StableDiffusionXLPipeline` and
  diffusers' SDXL Diffusion-DPO script build them;
- `SD3` (3.0 and 3.5) and `Flux` (dev and schnell): flow-matching transformers,
  their prompts encoded by their own pipelines' `encode_prompt` (two CLIPs and an
  optional T5; one CLIP's pooled output and a T5), Flux's latents packed 2x2 with
  their position ids and, for dev, the guidance embedding.

Images are resized so that their short side is the model's resolution and
centre-cropped (SDXL's time ids record the original size and the crop);
latents are the VAE's mean, shifted and scaled as the VAE's config says:
deterministic, so a run encodes each image once. Sampling goes through the
family's own diffusers pipeline, so an image is the one
`DiffusionPipeline.from_pretrained(folder)(prompt, generator=...)` paints;
compound's own layout samples with DDIM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from compound.console import once


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


def _to_own_dtype(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Latents into a VAE kept in float32 (`force_upcast`, the VAEs of SDXL-class models overflow in half
    precision) while the denoiser paints in bfloat16 or float16: the pipelines cast only to float16 VAEs."""
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


class Family:
    """A pipeline family: its parts, its conditioning, its sampler, and the process it was trained on."""

    name: ClassVar[str]
    #: The denoiser's part, and the parts besides it and the scheduler.
    denoiser_part: ClassVar[str] = "unet"
    parts: ClassVar[tuple[str, ...]] = ("text_encoder", "tokenizer")
    optional: ClassVar[tuple[str, ...]] = ("vae",)
    #: The training process (`ddpm` or `flow`) and, for flow, how training drew its noise levels.
    process: ClassVar[str] = "ddpm"
    weighting: ClassVar[str] = ""

    def __init__(
        self,
        parts: dict[str, Any],
        denoiser: Any,
        pipeline: str,
        index: dict[str, Any],
        resolution: int | None = None,
        sequence: int | None = None,
        guidance: float | None = None,
    ):
        self.denoiser = denoiser
        self.pipeline = pipeline
        self.index = index
        self.size = resolution
        self.sequence = sequence or self.default_sequence()
        self.guidance = guidance
        self.scheduler = parts["scheduler"]
        self.vae: Any = parts.get("vae")
        if self.vae is not None:
            self.vae.requires_grad_(False).eval()
            self.vae.decoder.register_forward_pre_hook(_to_own_dtype)
            if getattr(self.vae, "post_quant_conv", None) is not None:
                self.vae.post_quant_conv.register_forward_pre_hook(_to_own_dtype)
        self.named = {n: parts.get(n) for n in (*self.parts, *self.optional) if n != "vae"}
        for name, part in self.named.items():
            if part is not None and "encoder" in name:
                part.requires_grad_(False).eval()
        self.encoders: list[Any] = [p for n, p in self.named.items() if p is not None and "encoder" in n]
        self.tokenizers: list[Any] = [p for n, p in self.named.items() if p is not None and "tokenizer" in n]
        for name, tokenizer in self.named.items():
            encoder = self.named.get(name.replace("tokenizer", "text_encoder"))
            if tokenizer is not None and "tokenizer" in name and encoder is not None:
                _bound(tokenizer, encoder)

    def default_sequence(self) -> int:
        """The T5 prompt length when `max_sequence_length=` is not given (families with a T5: their
        pipeline's default, so that scores and samples match the pipeline's own)."""
        return 77

    def follow(self) -> None:
        """Keep the frozen parts (VAE, text encoders) on the denoiser's device: moving the system (the
        trainer, `compound sample`) moves its parameters, and these parts are not among them."""
        device = next(self.denoiser.parameters()).device
        for part in (self.vae, *self.encoders):
            if part is not None and next(part.parameters()).device != device:
                part.to(device)

    # ------------------------------------------------------------ images

    def channels(self) -> int:
        return int((self.vae if self.vae is not None else self.denoiser).config.in_channels)

    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    def resolution(self) -> int:
        """The side of the images the model paints (the `resolution=` option, else from its configs)."""
        return self.size or int(self.denoiser.config.sample_size) * self.vae_scale()

    def pixels(self, value: Any) -> tuple[torch.Tensor, Geometry]:
        """An image (PIL or a path) as a [C, H, W] tensor in [-1, 1] at the model's resolution: the short
        side resized to it, then centre-cropped."""
        side = self.resolution()
        image = value if isinstance(value, Image.Image) else Image.open(value)
        image = image.convert("L" if self.channels() == 1 else "RGB")
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
        """What the denoiser sees of an image: the VAE's latent mean, shifted and scaled, or the pixels."""
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

    def extra(self, geometry: Geometry) -> torch.Tensor | None:
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
        """The model's prediction for a batch of noisy latents at timesteps (or noise levels) `t`."""
        raise NotImplementedError

    def _ids(self, tokenizer: Any, text: str, device: torch.device) -> torch.Tensor:
        limit = min(int(getattr(tokenizer, "model_max_length", 77) or 77), 77)
        if len(text) > limit // 4 and len(tokenizer(text)["input_ids"]) > limit:
            once(
                f"{self.pipeline}:caption-cut",
                f"a {self.pipeline} caption of more than {limit} tokens is cut to its text encoder's "
                f"{limit} (and so is every longer one)",
            )
        ids: torch.Tensor = tokenizer(
            [text], padding="max_length", max_length=limit, truncation=True, return_tensors="pt"
        )["input_ids"]
        return ids.to(device)

    @staticmethod
    def _stack(captions: Sequence[Caption], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The captions' states and pooled embeddings as a batch, on `like`'s device and in its dtype."""
        states = torch.stack([c.states for c in captions]).to(like.device, like.dtype)
        pooled = torch.stack([c.pooled for c in captions if c.pooled is not None]).to(like.device, like.dtype)
        return states, pooled

    # ------------------------------------------------------------ sampling

    def sample(
        self, captions: Sequence[str], generator: torch.Generator, options: dict[str, Any]
    ) -> list[Image.Image]:
        """One image per caption, through the family's diffusers pipeline (`steps`, `guidance_scale`:
        the pipeline's defaults unless given)."""
        settings = self.settings()
        if "steps" in options:
            settings["num_inference_steps"] = int(options["steps"])
        if "guidance_scale" in options:
            settings["guidance_scale"] = float(options["guidance_scale"])
        pipeline = self.diffusers_pipeline()
        pipeline.set_progress_bar_config(disable=True)  # compound's own progress shows the batches
        with torch.no_grad():
            out = pipeline(prompt=list(captions), generator=generator, output_type="pil", **settings)
        return list(out.images)

    def settings(self) -> dict[str, Any]:
        """What the family's pipeline is always called with (besides prompts and the caller's options)."""
        return {}

    def sampler(self) -> Any:
        """A fresh copy of the scheduler sampling steps through."""
        return type(self.scheduler).from_config(self.scheduler.config)

    def steps_problem(self, steps: int) -> str | None:
        """Why sampling cannot take `steps` denoising steps (None: it can): a DDPM-type scheduler asked
        for as many steps as its training timesteps (with its `steps_offset`) reads past its noise table."""
        if self.process != "ddpm":
            return None
        scheduler = self.sampler()
        scheduler.set_timesteps(steps)
        top, limit = int(scheduler.timesteps.max()), int(scheduler.config.num_train_timesteps)
        if top < limit:
            return None
        return (
            f"steps={steps}: its {type(scheduler).__name__} would step from timestep {top}, past its {limit} "
            f"training timesteps; use steps={steps - (top - limit + 1)} or fewer"
        )

    def problem(self) -> str | None:
        """What the folder lacks for this family (None: nothing)."""
        if self.vae is None and self.pipeline != "CompoundDiffusion":
            return (
                f"its model_index.json names no vae: a {self.pipeline} paints in a VAE's latent space and "
                "decodes with it; add the pipeline's vae/ folder and its entry in model_index.json"
            )
        return None

    def diffusers_pipeline(self) -> Any:
        """The family's own diffusers pipeline around these parts and the policy's denoiser."""
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
        states = torch.stack([c.states for c in captions]).to(noisy.device, noisy.dtype)
        predicted: torch.Tensor = model(noisy, t, encoder_hidden_states=states).sample
        return predicted

    def sample(
        self, captions: Sequence[str], generator: torch.Generator, options: dict[str, Any]
    ) -> list[Image.Image]:
        if self.pipeline != "CompoundDiffusion":
            return super().sample(captions, generator, options)
        return self._ddim(captions, generator, options)

    def sampler(self) -> Any:
        """compound's own layout samples with DDIM, from the training scheduler's config."""
        if self.pipeline != "CompoundDiffusion":
            return super().sampler()
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler.config)

    def diffusers_pipeline(self) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.encoders[0],
            tokenizer=self.tokenizers[0],
            unet=self.denoiser,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    @torch.no_grad()
    def _ddim(
        self, captions: Sequence[str], generator: torch.Generator, options: dict[str, Any]
    ) -> list[Image.Image]:
        """compound's own layout: DDIM from the training scheduler's config, guidance only when asked."""
        steps, guidance = int(options.get("steps", 50)), float(options.get("guidance_scale", 1.0))
        scheduler = self.sampler()
        scheduler.set_timesteps(steps)
        denoiser = self.denoiser
        device = next(denoiser.parameters()).device
        config = denoiser.config
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

    def extra(self, geometry: Geometry) -> torch.Tensor:
        """The time ids: original size, crop top-left, target size (diffusers' `_get_add_time_ids`)."""
        side = self.resolution()
        return torch.tensor([*geometry.size, *geometry.crop, side, side], dtype=torch.float32)

    def denoise(
        self,
        model: nn.Module,
        noisy: torch.Tensor,
        t: torch.Tensor,
        captions: Sequence[Caption],
        extras: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        states, pooled = self._stack(captions, noisy)
        time_ids = torch.stack([e for e in extras if e is not None]).to(noisy.device, noisy.dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        predicted: torch.Tensor = model(
            noisy, t, encoder_hidden_states=states, added_cond_kwargs=added
        ).sample
        return predicted

    def diffusers_pipeline(self) -> Any:
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=self.vae,
            text_encoder=self.encoders[0],
            text_encoder_2=self.encoders[1],
            tokenizer=self.tokenizers[0],
            tokenizer_2=self.tokenizers[1],
            unet=self.denoiser,
            scheduler=self.scheduler,
            force_zeros_for_empty_prompt=bool(self.index.get("force_zeros_for_empty_prompt", True)),
            add_watermarker=False,
        )


def _bound(tokenizer: Any, encoder: Any) -> None:
    """A tokenizer folder without `model_max_length` (transformers then says 10^30, and a pipeline padding
    to it overflows) gets its text encoder's position count, in memory; the folder is not changed."""
    limit = getattr(tokenizer, "model_max_length", None)
    config = getattr(encoder, "config", None)
    positions = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
    if isinstance(positions, int) and (not isinstance(limit, int) or limit > 10**9):
        tokenizer.model_max_length = positions


class FlowFamily(Family):
    """A flow-matching transformer family: its pipeline is built from the folder's parts as they are named,
    and paints at the family's resolution with the T5 prompt length the scores use."""

    denoiser_part = "transformer"
    parts = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    process = "flow"
    #: The diffusers pipeline class of the family.
    pipeline_class: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        side = self.resolution()
        return {"height": side, "width": side, "max_sequence_length": self.sequence}

    def default_sequence(self) -> int:
        import inspect

        import diffusers

        call = getattr(diffusers, self.pipeline_class).__call__
        default = inspect.signature(call).parameters["max_sequence_length"].default
        return int(default)

    def diffusers_pipeline(self) -> Any:
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        return cls(transformer=self.denoiser, scheduler=self.scheduler, vae=self.vae, **self.named)


class SD3(FlowFamily):
    """Stable Diffusion 3 and 3.5: an MMDiT transformer, two CLIPs with projections and an optional T5."""

    name = "sd3"
    pipeline_class = "StableDiffusion3Pipeline"
    optional = ("vae", "text_encoder_3", "tokenizer_3")
    weighting = "logit_normal"  # the SD3 training script's default density of noise levels

    def caption(self, text: str) -> Caption:
        with torch.no_grad():
            states, _, pooled, _ = self.diffusers_pipeline().encode_prompt(
                prompt=text,
                prompt_2=None,
                prompt_3=None,
                do_classifier_free_guidance=False,
                max_sequence_length=self.sequence,
            )
        return Caption(states[0], pooled[0])

    def denoise(
        self,
        model: nn.Module,
        noisy: torch.Tensor,
        t: torch.Tensor,
        captions: Sequence[Caption],
        extras: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        states, pooled = self._stack(captions, noisy)
        timestep = (t * 1000).to(noisy.device)  # the pipeline's convention: sigma * 1000
        out = model(
            hidden_states=noisy, timestep=timestep, encoder_hidden_states=states, pooled_projections=pooled
        )
        predicted: torch.Tensor = out.sample
        return predicted


class Flux(FlowFamily):
    """Flux (dev and schnell): a transformer over 2x2-packed latents, a CLIP's pooled output and a T5."""

    name = "flux"
    pipeline_class = "FluxPipeline"
    weighting = "uniform"  # the Flux training script's default ("none": uniform noise levels)

    def caption(self, text: str) -> Caption:
        with torch.no_grad():
            states, pooled, _ = self.diffusers_pipeline().encode_prompt(
                prompt=text, prompt_2=None, max_sequence_length=self.sequence
            )
        return Caption(states[0], pooled[0])

    def resolution(self) -> int:
        return self.size or 128 * self.vae_scale()  # FluxPipeline's default_sample_size of latents

    def denoise(
        self,
        model: nn.Module,
        noisy: torch.Tensor,
        t: torch.Tensor,
        captions: Sequence[Caption],
        extras: Sequence[torch.Tensor | None],
    ) -> torch.Tensor:
        from diffusers import FluxPipeline

        batch, channels, height, width = noisy.shape
        device = noisy.device
        states, pooled = self._stack(captions, noisy)
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, device, noisy.dtype
        )
        text_ids = torch.zeros(states.shape[1], 3, device=device, dtype=noisy.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:  # dev: the guidance its distillation was trained with
            guidance = torch.full((batch,), self.guidance or 3.5, device=device, dtype=noisy.dtype)
        out = model(
            hidden_states=packed,
            timestep=t.to(device),  # the pipeline's convention: sigma (the model scales it by 1000)
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=states,
            txt_ids=text_ids,
            img_ids=image_ids,
        ).sample
        scale = self.vae_scale()
        unpacked: torch.Tensor = FluxPipeline._unpack_latents(out, height * scale, width * scale, scale)
        return unpacked


FAMILIES: dict[str, type[Family]] = {family.name: family for family in (SD, SDXL, SD3, Flux)}


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A [C, H, W] tensor in [-1, 1] as a PIL image (grayscale for one channel)."""
    array = ((tensor.float().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return (
        Image.fromarray(array[0], mode="L")
        if array.shape[0] == 1
        else Image.fromarray(array.transpose(1, 2, 0))
    )
