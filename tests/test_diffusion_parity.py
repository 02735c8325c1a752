"""A single-diffusion system's SysDPO loss is Diffusion-DPO's, with beta_dpo = 2 * beta * T.

The reference computation below follows diffusers' research example
(examples/research_projects/diffusion_dpo): MSE averaged over pixels per image,
model_diff = loss_w - loss_l, the same for the reference, and
loss = -logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)).mean(). It gets
the same timesteps and noise by the documented recipe: one seed per (pair,
factor) from the caller's generator, then t and the noise from that seed.
"""

import numpy as np
import pytest
import torch
from conftest import perturb, pipeline_parts
from PIL import Image
from torch.nn import functional as F

import compound


def images(seed: int, count: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L") for _ in range(count)]


def diffusion_dpo_loss(folder, backend, captions, chosen, rejected, seeds, beta_dpo):
    """diffusers' Diffusion-DPO loss, written out independently of the backend's scoring code."""
    tokenizer, encoder, scheduler = pipeline_parts(folder)
    ids = tokenizer(
        captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
    ).input_ids
    hidden = encoder(ids)[0]
    to_tensor = lambda img: torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)[None]  # noqa: E731
    latents = torch.stack([to_tensor(i) for i in chosen + rejected])
    draws = [torch.Generator().manual_seed(int(s)) for s in seeds]
    t = torch.cat([torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=g) for g in draws])
    noise = torch.cat([torch.randn((1, 1, 16, 16), generator=g) for g in draws])
    t, noise, hidden = t.repeat(2), noise.repeat(2, 1, 1, 1), hidden.repeat(2, 1, 1)
    noisy = scheduler.add_noise(latents, noise, t)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(latents, noise, t)

    def losses(model):
        pred = model(noisy, t, hidden).sample
        return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=[1, 2, 3])

    model_w, model_l = losses(backend.model).chunk(2)
    with torch.no_grad(), backend.reference() as reference:
        ref_w, ref_l = losses(reference).chunk(2)
    inside = -0.5 * beta_dpo * ((model_w - model_l) - (ref_w - ref_l))
    return -F.logsigmoid(inside).mean()


@pytest.mark.parametrize("folder", ["painter", "vpred", "unet"])
def test_loss_equals_diffusion_dpo(tiny, write_system, folder):
    cmp = write_system(
        f'system single\ncomponent painter = diffusion("{tiny[folder]}")\n'
        "input caption : text\nimage : image ~ painter(caption)\noutput image\n"
    )
    system = compound.load(cmp)
    backend = system.backend("painter")
    perturb(backend.model, scale=0.02)
    captions = ["a disc growing", "a scene getting darker", "a dot moving right"]
    good, bad = images(0, 3), images(1, 3)
    beta = 0.01
    out = system.log_ratio(
        [{"caption": c, "image": g} for c, g in zip(captions, good, strict=True)],
        [{"caption": c, "image": b} for c, b in zip(captions, bad, strict=True)],
        generator=torch.Generator().manual_seed(7),
    )
    ours = compound.sysdpo_loss(out, beta=beta)
    seeds = torch.randint(0, 2**62, (3, 1), generator=torch.Generator().manual_seed(7))[:, 0]
    theirs = diffusion_dpo_loss(
        tiny[folder], backend, captions, good, bad, seeds, beta_dpo=2 * beta * backend.T
    )
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert abs(ours.item() - np.log(2)) > 1e-4  # not the trivial value of an unmoved policy
