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

Flow-matching models (SD3, SD3.5, Flux) were trained on rectified flow, `Flow`:

    x_sigma = (1 - sigma) x0 + sigma eps,  target = eps - x0 (the velocity)

with sigma drawn as their training scripts draw it: u from a logit-normal
(SD3's default weighting) or uniform (Flux's) density, then the sigma of the
scheduler's training grid at index u * T (shifted as the scheduler's config
says). The surrogate keeps T = 1000 as its scale, so `beta` means the same for
every family; in Flow-DPO's notation (Liu et al. 2025, squared-norm errors) the
loss is theirs with beta_FD = 2 * beta * T / D, D the latent size.

A process that is neither (EDM's continuous sigmas) is refused rather than
scored approximately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PREDICTIONS = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class Draws:
    """The random draws of one image's surrogate: K timesteps (DDPM) or noise levels sigma (flow), and K
    noises."""

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


class Flow:
    """Rectified flow (flow matching), as SD3's and Flux's training scripts draw it."""

    def __init__(self, config: Any, weighting: str):
        from diffusers import FlowMatchEulerDiscreteScheduler

        name = str(config.get("_class_name", ""))
        if not name.startswith("FlowMatch"):
            raise ValueError(
                f"its scheduler {name} is not a flow-matching one, as this family is trained with"
            )
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)  # a fresh one holds the training grid
        self.sigmas = scheduler.sigmas.float()
        self.weighting = weighting
        self.prediction = "velocity"
        #: The scale that plays Diffusion-DPO's T: the number of training timesteps.
        self.scale = int(scheduler.config.num_train_timesteps)

    def draw(self, seed: int, k: int, shape: tuple[int, ...]) -> Draws:
        """K noise levels (u from the family's density, then the training grid's sigma) and noises."""
        generator = torch.Generator().manual_seed(seed)
        if self.weighting == "logit_normal":
            u = torch.sigmoid(torch.randn((k,), generator=generator))
        else:
            u = torch.rand((k,), generator=generator)
        index = (u * len(self.sigmas)).long().clamp(max=len(self.sigmas) - 1)
        noise = torch.randn((k, *shape), generator=generator)
        return Draws(self.sigmas[index], noise)

    def noisy(self, clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_sigma = (1 - sigma) x0 + sigma eps."""
        s = sigma.to(clean.dtype).view(-1, *([1] * (clean.dim() - 1)))
        return (1.0 - s) * clean + s * noise

    def target(self, clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The velocity eps - x0."""
        return noise - clean
