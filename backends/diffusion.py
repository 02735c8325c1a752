"""`diffusion`: a text-to-image diffusion model, scored by its ELBO surrogate.

The folder is a diffusers pipeline folder: `model_index.json` naming a denoiser
(`unet`: diffusers' `UNet2DConditionModel` or any `ModelMixin` with its call
signature, such as the project's `TinyDenoiser`), a `scheduler`, a
`text_encoder` and `tokenizer` for the conditioning, and optionally a `vae` for
latent models. Classes are taken from diffusers, transformers and the project
only; nothing named in a folder is imported from elsewhere.

Score of an image x given a caption c (docs/method.md, "Diffusion nodes"; Diffusion-DPO):

    score(x | c) = -T * mean_k mean_pixels || target_k - model(x_t_k, t_k, c) ||^2

with T the scheduler's number of training timesteps, K = `timesteps=` draws of
(t, noise) per image (default 1), `target` the noise (epsilon prediction) or the
velocity (v-prediction). A node's log ratio, policy minus reference, is
T * (l_ref - l_theta). The K draws come from one seed per (row, node): the
chosen and the rejected image of a pair, and the policy and the reference, see
the same t and noise. In Diffusion-DPO's notation the SysDPO loss of a pair is
-logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)) with beta_dpo = 2 * beta * T.

Only the denoiser trains (with LoRA if `lora(...)` is given); the text encoder
and the VAE stay frozen, so caption embeddings are cached.

Component options: `lora(...)`, `reference=`, `batch_size=` (images per forward
pass), `timesteps=` (K), `steps=` (denoising steps when sampling, default 50),
`guidance_scale=` (classifier-free guidance when sampling, default 1: none),
`dtype=`. A node may override `timesteps=` for itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from compound import ir
from compound.backends import BUILTIN
from compound.backends.base import Backend, int_option, load_failed
from compound.backends.loading import dtype_option, lora, resolve, safetensors_only


@dataclass(frozen=True)
class Picture:
    """One image to score: its caption's hidden states, its clean (latent) tensor, and K."""

    caption: torch.Tensor
    clean: torch.Tensor
    timesteps: int


@dataclass(frozen=True)
class Draws:
    t: torch.Tensor  # [K]
    noise: torch.Tensor  # [K, C, H, W]


class Diffusion(Backend):
    spec = BUILTIN["diffusion"]
    lora_targets = ("conv1", "conv2", "film", "to_q", "to_k", "to_v", "to_out.0")

    def __init__(
        self, component: ir.Component, model: nn.Module, parts: dict[str, Any], reference: str | None = None
    ):
        super().__init__(component, model, reference)
        self.scheduler = parts["scheduler"]
        self.tokenizer = parts["tokenizer"]
        self.text_encoder = parts["text_encoder"].requires_grad_(False).eval()
        self.vae: Any = parts["vae"].requires_grad_(False).eval() if parts.get("vae") is not None else None
        self.prediction = self.scheduler.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction"):
            raise self.error(f"prediction_type {self.prediction!r} is not supported (epsilon, v_prediction)")
        self.T = int(self.scheduler.config.num_train_timesteps)
        self.timesteps = int_option(component, component.options, "timesteps", 1)
        self._captions = lru_cache(maxsize=4096)(self._encode)
        self._draws = lru_cache(maxsize=1024)(self._draw)  # a pair's two images ask for the same draws

    @classmethod
    def load(
        cls,
        component: ir.Component,
        root: Path,
        reference: str | None = None,
        trust_remote_code: bool = False,
    ) -> Diffusion:
        source = resolve(component, root)
        for part in _WEIGHTS:
            safetensors_only(component, Path(source) / part)
        try:
            parts = load_parts(Path(source), dtype_option(component), trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise load_failed(
                component,
                source,
                "a diffusion model (model_index.json with a unet, a scheduler, "
                "a text_encoder and a tokenizer)",
                e,
            ) from None
        denoiser = parts.pop("unet")
        model = lora(denoiser, component, cls.lora_targets)
        backend = cls(component, model, parts, reference)
        backend.source = source
        return backend

    # ------------------------------------------------------------ conditioning and images

    @property
    def channels(self) -> int:
        return int((self.vae if self.vae is not None else self._denoiser()).config.in_channels)

    @property
    def resolution(self) -> int:
        size = int(self._denoiser().config.sample_size)
        return size * (2 ** (len(self.vae.config.block_out_channels) - 1)) if self.vae is not None else size

    def _denoiser(self) -> Any:
        """The denoiser itself (inside its LoRA wrapper, if any), with its diffusers config."""
        base = getattr(self.model, "get_base_model", None)
        return base() if base is not None else self.model

    def _encode(self, caption: str) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        limit = min(int(getattr(self.tokenizer, "model_max_length", 77) or 77), 77)
        ids = self.tokenizer(
            [caption], padding="max_length", max_length=limit, truncation=True, return_tensors="pt"
        )["input_ids"].to(device)
        with torch.no_grad():
            return self.text_encoder(ids)[0][0]

    def pixels(self, value: Any) -> torch.Tensor:
        """An image (PIL or a path) as a [C, H, W] tensor in [-1, 1] at the model's resolution."""
        image = value if isinstance(value, Image.Image) else Image.open(value)
        image = image.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.resolution, self.resolution):
            image = image.resize((self.resolution, self.resolution), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array))

    def prepare(self, condition: str, value: Any, options: Mapping[str, ir.Value]) -> Picture:
        clean = self.pixels(value)
        if self.vae is not None:
            with torch.no_grad():
                device = next(self.vae.parameters()).device
                latent = self.vae.encode(clean[None].to(device)).latent_dist.mean
                clean = (latent * self.vae.config.scaling_factor)[0]
        k = int_option(self.component, options, "timesteps", self.timesteps)
        return Picture(self._captions(condition), clean, k)

    # ------------------------------------------------------------ scoring

    def draws(self, seed: int, item: Picture) -> Draws:
        return self._draws(seed, item.timesteps, tuple(item.clean.shape))

    def _draw(self, seed: int, timesteps: int, shape: tuple[int, ...]) -> Draws:
        generator = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.T, (timesteps,), generator=generator)
        noise = torch.randn((timesteps, *shape), generator=generator)
        return Draws(t, noise)

    def _score(self, model: nn.Module, items: Sequence[Picture], draws: Sequence[Draws]) -> torch.Tensor:
        device = next(model.parameters()).device
        counts = [d.t.numel() for d in draws]
        clean = torch.cat(
            [item.clean[None].expand(k, *item.clean.shape) for item, k in zip(items, counts, strict=True)]
        )
        caption = torch.cat(
            [item.caption[None].expand(k, *item.caption.shape) for item, k in zip(items, counts, strict=True)]
        )
        t = torch.cat([d.t for d in draws]).to(device)
        noise = torch.cat([d.noise for d in draws]).to(device)
        clean, caption = clean.to(device), caption.to(device)
        noisy = self.scheduler.add_noise(clean, noise, t)
        target = noise if self.prediction == "epsilon" else self.scheduler.get_velocity(clean, noise, t)
        predicted = model(noisy, t, encoder_hidden_states=caption).sample
        mse = (predicted.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        sizes = torch.tensor(counts, device=device)
        owner = torch.repeat_interleave(torch.arange(len(items), device=device), sizes)
        per_item = (
            torch.zeros(len(items), device=device).index_add(0, owner, mse) / sizes
        )  # mean over the K draws
        return -self.T * per_item

    # ------------------------------------------------------------ sampling and saving

    @torch.no_grad()
    def sample(
        self, conditions: Sequence[str], generator: torch.Generator, **options: Any
    ) -> list[Image.Image]:
        """Run the denoising loop (DDIM from the training scheduler's config) for each caption."""
        from diffusers import DDIMScheduler

        steps = int(options.get("steps", self.component.options.get("steps", 50)))
        guidance = float(options.get("guidance_scale", self.component.options.get("guidance_scale", 1.0)))
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps)
        device = next(self.model.parameters()).device
        denoiser = self._denoiser().config
        images: list[Image.Image] = []
        for start in range(0, len(conditions), self.batch_size):
            batch = list(conditions[start : start + self.batch_size])
            caption = torch.stack([self._captions(c) for c in batch]).to(device)
            shape = (len(batch), denoiser.in_channels, denoiser.sample_size, denoiser.sample_size)
            x = torch.randn(shape, generator=generator).to(device)
            empty = self._captions("")[None].expand_as(caption).to(device)
            for t in scheduler.timesteps:
                step = t.to(device).expand(len(batch))
                out = self.model(x, step, encoder_hidden_states=caption).sample
                if guidance != 1.0:
                    plain = self.model(x, step, encoder_hidden_states=empty).sample
                    out = plain + guidance * (out - plain)
                x = scheduler.step(out, t, x).prev_sample
            if self.vae is not None:
                x = self.vae.decode(x / self.vae.config.scaling_factor).sample
            images += [to_image(img) for img in x.clamp(-1, 1).cpu()]
        return images

    def export(self, path: Path, merge: bool = True) -> None:
        """The pipeline folder it was loaded from, with the trained denoiser (or its adapter) as `unet`."""
        shutil.copytree(self.source, path, ignore=shutil.ignore_patterns("unet"), dirs_exist_ok=True)
        merged: Any = self.merged(merge)
        merged.save_pretrained(path / "unet", safe_serialization=True)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A [C, H, W] tensor in [-1, 1] as a PIL image (grayscale for one channel)."""
    array = ((tensor.float().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return (
        Image.fromarray(array[0], mode="L")
        if array.shape[0] == 1
        else Image.fromarray(array.transpose(1, 2, 0))
    )


#: The parts of a pipeline that hold weights.
_WEIGHTS = ("unet", "text_encoder", "vae")


def load_parts(folder: Path, dtype: torch.dtype, trust_remote_code: bool = False) -> dict[str, Any]:
    """The pieces of a diffusers pipeline folder, from an allow-list of libraries; weights from
    safetensors only."""
    index = json.loads((folder / "model_index.json").read_text())
    parts: dict[str, Any] = {}
    for name in ("unet", "scheduler", "text_encoder", "tokenizer", "vae"):
        entry = index.get(name)
        if not entry or entry[0] is None:
            if name != "vae":
                raise KeyError(f"model_index.json names no {name}")
            continue
        cls = _class(*entry)
        loader = cls.from_pretrained
        kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True} if name in _WEIGHTS else {}
        if entry[0] == "transformers":
            kwargs["trust_remote_code"] = trust_remote_code
        parts[name] = loader(folder / name, **kwargs)
    return parts


def _class(library: str, name: str) -> Any:
    import diffusers
    import transformers

    from compound.backends.denoiser import TinyDenoiser

    allowed: dict[str, Any] = {"diffusers": diffusers, "transformers": transformers}
    if library in ("compound", "compound.backends.denoiser") and name == "TinyDenoiser":
        return TinyDenoiser
    if library == "transformers" and name.endswith(("Tokenizer", "TokenizerFast")):
        return transformers.AutoTokenizer
    module = allowed.get(library)
    cls = getattr(module, name, None) if module is not None else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"model_index.json names {library}.{name}; compound loads diffusers, transformers and "
            "compound classes only"
        )
    return cls
