"""A tiny text-conditioned denoiser with the `UNet2DConditionModel` call signature.

diffusers' own UNet is slow at toy sizes on a CPU (a feasibility study measured 0.78 s per
training step at batch 64 for a (32, 64) UNet2DConditionModel, 984k parameters), so the
project ships this small convolutional U-Net: one down and one up level,
residual blocks modulated (FiLM) by the diffusion timestep and by the text
(the mean and the last of the text encoder's hidden states), and a coarse
spatial map computed from the text that the bottleneck reads, so that a caption
can say where things are, not only how bright or how big. It is a diffusers `ModelMixin` +
`ConfigMixin`, so it saves and loads with `save_pretrained` /
`from_pretrained` exactly like a real UNet, and the diffusion backend calls it
the same way: `model(sample, timestep, encoder_hidden_states).sample`.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn
from torch.nn import functional as F


class _Block(nn.Module):
    """conv -> norm -> FiLM(scale, shift) -> SiLU, twice, with a residual connection."""

    def __init__(self, cin: int, cout: int, cond: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.film = nn.Linear(cond, 2 * cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(self.conv1(x)) * (1 + scale) + shift)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


class TinyDenoiser(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers types config_name twice
    """Predicts the noise (or velocity) in `sample` at `timestep`, given the caption's hidden states."""

    _supports_gradient_checkpointing = False
    #: What LoRA adapts by default (it has no attention projections): its convolutions and FiLM layers.
    lora_targets = ("conv1", "conv2", "film")

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: tuple[int, int] = (32, 64),
        cross_attention_dim: int = 32,
        time_dim: int = 64,
    ):
        super().__init__()
        c0, c1 = channels
        self.time = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.text = nn.Sequential(nn.Linear(2 * cross_attention_dim, time_dim), nn.SiLU())
        self.where = nn.Linear(2 * cross_attention_dim, (sample_size // 2) ** 2)
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.down = _Block(c0, c0, time_dim)
        self.downsample = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.mid = _Block(c0 + 1, c1, time_dim)
        self.up = _Block(c1 + c0, c0, time_dim)
        self.conv_out = nn.Conv2d(c0, out_channels, 3, padding=1)

    def _timestep_embedding(self, timestep: torch.Tensor) -> torch.Tensor:
        half = int(self.config["time_dim"]) // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=timestep.device) / half)
        angles = timestep.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
        **unused: object,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        words = torch.cat([encoder_hidden_states.mean(dim=1), encoder_hidden_states[:, -1]], dim=1)
        cond = self.time(self._timestep_embedding(t)) + self.text(words)
        h0 = self.down(self.conv_in(sample), cond)
        low = self.downsample(h0)
        where = self.where(words).view(batch, 1, *low.shape[-2:])
        h1 = self.mid(torch.cat([low, where], dim=1), cond)
        h = F.interpolate(h1, size=h0.shape[-2:], mode="nearest")
        out = self.conv_out(self.up(torch.cat([h, h0], dim=1), cond))
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)
