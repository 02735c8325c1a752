"""A single-diffusion system's SysDPO loss is Diffusion-DPO's, in each of diffusers' two script conventions.

The reference computations below follow diffusers' research example
(examples/research_projects/diffusion_dpo): MSE averaged over pixels per image,
model_diff = loss_w - loss_l, the same for the reference, and then the two scripts part ways:

- train_diffusion_dpo.py (SD 1.5): loss = -logsigmoid(beta_dpo * (ref_diff - model_diff)).mean(),
  with no factor 0.5;
- train_diffusion_dpo_sdxl.py: loss = -logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)).mean().

Compound's diffusion score is -T * mse (T the training timesteps, `backend.T`), so its beta is
beta_dpo / T for the SD 1.5 script and beta_dpo / (2 T) for the SDXL script. The reference computation
gets the same timesteps and noise by the documented recipe: one seed per (pair, factor) from the
caller's generator, then t and the noise from that seed.
"""

import numpy as np
import pytest
import torch
from conftest import perturb, pipeline_parts
from PIL import Image
from torch.nn import functional as F

import compound

FOLDERS = ["painter", "vpred", "unet"]
CAPTIONS = ["a disc growing", "a scene getting darker", "a dot moving right"]


def images(seed: int, count: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L") for _ in range(count)]


def denoising_losses(folder, backend, captions, chosen, rejected, seeds):
    """diffusers' per-image denoising losses (policy and reference, chosen and rejected), written out
    independently of the backend's scoring code: (model_w, model_l, ref_w, ref_l)."""
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
    return model_w, model_l, ref_w, ref_l


def sd15_script_loss(model_w, model_l, ref_w, ref_l, beta_dpo):
    """train_diffusion_dpo.py: logits = ref_diff - model_diff; -logsigmoid(beta_dpo * logits)."""
    model_diff, ref_diff = model_w - model_l, ref_w - ref_l
    return -F.logsigmoid(beta_dpo * (ref_diff - model_diff)).mean()


def sdxl_script_loss(model_w, model_l, ref_w, ref_l, beta_dpo):
    """train_diffusion_dpo_sdxl.py: inside_term = -0.5 * beta_dpo * (model_diff - ref_diff)."""
    model_diff, ref_diff = model_w - model_l, ref_w - ref_l
    return -F.logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)).mean()


def both_losses(tiny, write_system, folder, beta_of):
    """Compound's SysDPO loss with beta = beta_of(T), and the pieces of the scripts' loss on the same
    draws."""
    cmp = write_system(
        f'system single\ncomponent painter = diffusion("{tiny[folder]}")\n'
        "input caption : text\nimage : image ~ painter(caption)\noutput image\n"
    )
    system = compound.load(cmp)
    backend = system.backend("painter")
    assert backend.T == 1000
    perturb(backend.model, scale=0.02)
    good, bad = images(0, 3), images(1, 3)
    out = system.log_ratio(
        [{"caption": c, "image": g} for c, g in zip(CAPTIONS, good, strict=True)],
        [{"caption": c, "image": b} for c, b in zip(CAPTIONS, bad, strict=True)],
        generator=torch.Generator().manual_seed(7),
    )
    ours = compound.sysdpo_loss(out, beta=beta_of(backend.T))
    seeds = torch.randint(0, 2**62, (3, 1), generator=torch.Generator().manual_seed(7))[:, 0]
    return ours, denoising_losses(tiny[folder], backend, CAPTIONS, good, bad, seeds)


@pytest.mark.parametrize("folder", FOLDERS)
def test_loss_equals_the_sd15_scripts_diffusion_dpo(tiny, write_system, folder):
    """train_diffusion_dpo.py's convention: compound's beta = beta_dpo / T (0.01 here, as in the SDXL
    test: float32 rounding of the MSEs comes out multiplied by beta * T, so both tests see the same)."""
    beta_dpo = 10.0
    ours, pieces = both_losses(tiny, write_system, folder, lambda T: beta_dpo / T)
    theirs = sd15_script_loss(*pieces, beta_dpo=beta_dpo)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert abs(ours.item() - np.log(2)) > 1e-4  # not the trivial value of an unmoved policy
    # the other script's loss at the same beta_dpo is another number: the conventions differ by 2
    assert abs(sdxl_script_loss(*pieces, beta_dpo=beta_dpo).item() - theirs.item()) > 1e-5


@pytest.mark.parametrize("folder", FOLDERS)
def test_loss_equals_the_sdxl_scripts_diffusion_dpo(tiny, write_system, folder):
    """train_diffusion_dpo_sdxl.py's convention: compound's beta = beta_dpo / (2 T) (0.01 here)."""
    beta_dpo = 20.0
    ours, pieces = both_losses(tiny, write_system, folder, lambda T: beta_dpo / (2 * T))
    theirs = sdxl_script_loss(*pieces, beta_dpo=beta_dpo)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    assert abs(ours.item() - np.log(2)) > 1e-4
    assert abs(sd15_script_loss(*pieces, beta_dpo=beta_dpo).item() - theirs.item()) > 1e-5
