"""The noising process a denoiser was trained on, whatever scheduler its folder ships for sampling.

Diffusion-DPO scores an image by how well the denoiser undoes noise it was
trained to undo, so the noise must be drawn as training drew it, not as the
sampler that happens to ship with the folder would: diffusers' training and
Diffusion-DPO scripts build a `DDPMScheduler` from the folder's scheduler
config whatever class it names, and so does `DDPM` here. (The Euler, Heun,
LMS and KDPM2 samplers' own `add_noise` gives x0 + sigma * eps, unscaled; the
DPM-Solver, UniPC and DEIS ones use the noise level of the mirrored timestep.)

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,  t uniform in [0, T)
    target = eps (epsilon), sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (v_prediction), x0 (sample)

A process that is not of this kind (EDM's continuous sigmas, flow matching) is
refused here rather than scored approximately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PREDICTIONS = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class Draws:
    """The random draws of one image's surrogate: K timesteps and K noises."""

    t: torch.Tensor  # [K]
    noise: torch.Tensor  # [K, C, H, W]


class DDPM:
    """The discrete variance-preserving process of DDPM-family models (SD 1.x/2.x, SDXL, ...)."""

    def __init__(self, config: Any):
        from diffusers import DDPMScheduler

        name = str(config.get("_class_name", ""))
        if name.startswith(("EDM", "FlowMatch")) or config.get("use_flow_sigmas"):
            raise ValueError(f"its scheduler {name} is not of the DDPM kind (EDM or flow matching)")
        if config.get("timestep_type") == "continuous":
            raise ValueError(f"its scheduler {name} takes continuous timesteps (an EDM-style model)")
        try:
            self.scheduler = DDPMScheduler.from_config(config)
        except NotImplementedError as e:
            raise ValueError(f"its scheduler's betas cannot be rebuilt for training noise: {e}") from None
        self.prediction = str(self.scheduler.config.prediction_type)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction_type {self.prediction!r} is not one of {', '.join(PREDICTIONS)}")
        #: Diffusion-DPO's T: the number of training timesteps, which scales the surrogate.
        self.scale = int(self.scheduler.config.num_train_timesteps)

    def draw(self, seed: int, k: int, shape: tuple[int, ...]) -> Draws:
        """K timesteps and noises from one seed."""
        generator = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self.scale, (k,), generator=generator)
        noise = torch.randn((k, *shape), generator=generator)
        return Draws(t, noise)

    def noisy(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t, as training made it."""
        noisy: torch.Tensor = self.scheduler.add_noise(clean, noise, t)
        return noisy

    def target(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to predict from x_t."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "v_prediction":
            velocity: torch.Tensor = self.scheduler.get_velocity(clean, noise, t)
            return velocity
        return clean
