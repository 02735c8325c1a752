"""Diffusion families users bring: scores independent of the sampling scheduler, SDXL equal to diffusers'
Diffusion-DPO script, sampling equal to the family's own pipeline, unsupported folders named."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import perturb
from PIL import Image
from torch.nn import functional as F

import compound
from compound.diagnostics import CompoundError
from compound.tiny import tiny_sd, tiny_sdxl

SCHEDULERS = [
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        "sd": tiny_sd(root / "sd"),
        "sd-v": tiny_sd(root / "sd-v", prediction_type="v_prediction", seed=1),
        "sdxl": tiny_sdxl(root / "sdxl", seed=2),
    }


def system_file(tmp_path, folder, name="painter.cmp"):
    path = tmp_path / name
    path.write_text(
        f'system single\ncomponent painter = diffusion("{folder}")\n'
        "input caption : text\nimage : image ~ painter(caption)\noutput image\n"
    )
    return path


def images(seed: int, count: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


CAPTIONS = ["a disc growing", "a scene getting darker"]


def pairs():
    good, bad = images(0, 2), images(1, 2)
    chosen = [{"caption": c, "image": g} for c, g in zip(CAPTIONS, good, strict=True)]
    rejected = [{"caption": c, "image": b} for c, b in zip(CAPTIONS, bad, strict=True)]
    return chosen, rejected


def with_scheduler(folder, out, name):
    """A copy of a pipeline folder that ships another scheduler class for sampling, same training config."""
    import diffusers

    shutil.copytree(folder, out)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler = getattr(diffusers, name).from_config(config)
    shutil.rmtree(out / "scheduler")
    scheduler.save_pretrained(out / "scheduler")
    index = json.loads((out / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", name]
    (out / "model_index.json").write_text(json.dumps(index))
    return out


@pytest.mark.parametrize("kind", ["sd", "sd-v"])
def test_every_scheduler_a_folder_can_ship_gives_the_same_log_ratio(folders, tmp_path, kind):
    """The training noise comes from the model's training process (a DDPM built from the scheduler config),
    not from the sampler: Euler's sigma-scaled and DPM-Solver's mirrored noise levels change nothing."""
    chosen, rejected = pairs()
    found = {}
    for name in SCHEDULERS:
        folder = with_scheduler(folders[kind], tmp_path / name, name)
        system = compound.load(system_file(tmp_path, folder, f"{name}.cmp"))
        perturb(system.backend("painter").model, scale=0.05)
        with torch.no_grad():
            out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(3))
        found[name] = torch.stack([out.chosen, out.rejected])
    base = found["DDPMScheduler"]
    assert base.abs().min() > 1e-3  # the perturbed policy differs from its reference
    for name, value in found.items():
        assert torch.allclose(value, base, atol=1e-5), name


def test_a_scheduler_of_another_process_is_refused(folders, tmp_path):
    folder = with_scheduler(folders["sd"], tmp_path / "edm", "EDMEulerScheduler")
    with pytest.raises(CompoundError, match=r"component 'painter'.*not of the DDPM kind"):
        compound.load(system_file(tmp_path, folder))


def test_an_unsupported_pipeline_is_named_with_the_supported_ones(folders, tmp_path):
    folder = tmp_path / "flux"
    shutil.copytree(folders["sd"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "FluxPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        CompoundError, match=r"names the pipeline FluxPipeline.*StableDiffusionXLPipeline \(sdxl\)"
    ):
        compound.load(system_file(tmp_path, folder))


def test_sdxl_loss_equals_the_sdxl_diffusion_dpo_script(folders, tmp_path):
    """diffusers' train_diffusion_dpo_sdxl.py, written out independently: the pipeline's own prompt
    encoding and time ids, a DDPMScheduler from the folder's config, one t and noise per pair,
    loss = -logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)) with beta_dpo = 2 * beta * T.
    (Latents are the VAE's mean, compound's deterministic choice; the script draws a sample.)"""
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline

    folder = folders["sdxl"]
    system = compound.load(system_file(tmp_path, folder))
    backend = system.backend("painter")
    perturb(backend.model, scale=0.05)
    chosen, rejected = pairs()
    beta = 0.001
    out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(7))
    ours = compound.sysdpo_loss(out, beta=beta)

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(CAPTIONS, do_classifier_free_guidance=False)
    time_ids = pipe._get_add_time_ids(
        (32, 32), (0, 0), (32, 32), torch.float32, pipe.text_encoder_2.config.projection_dim
    ).repeat(4, 1)
    pixels = torch.stack(
        [
            torch.from_numpy(np.asarray(i, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            for i in images(0, 2) + images(1, 2)
        ]
    )
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    seeds = torch.randint(0, 2**62, (2, 1), generator=torch.Generator().manual_seed(7))[:, 0]
    draws = [torch.Generator().manual_seed(int(s)) for s in seeds]
    t = torch.cat([torch.randint(0, 1000, (1,), generator=g) for g in draws])
    noise = torch.cat([torch.randn((1, 4, 4, 4), generator=g) for g in draws])
    t, noise = t.repeat(2), noise.repeat(2, 1, 1, 1)
    noisy = scheduler.add_noise(latents, noise, t)
    added = {"text_embeds": pooled.repeat(2, 1), "time_ids": time_ids}

    def losses(unet):
        pred = unet(noisy, t, prompt_embeds.repeat(2, 1, 1), added_cond_kwargs=added).sample
        return F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=[1, 2, 3]).chunk(2)

    model_w, model_l = losses(backend.model)
    with torch.no_grad(), backend.reference() as reference:
        ref_w, ref_l = losses(reference)
    inside = -0.5 * (2 * beta * 1000) * ((model_w - model_l) - (ref_w - ref_l))
    theirs = -F.logsigmoid(inside).mean()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item() - np.log(2)) > 1e-4


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_sampling_paints_what_the_familys_own_pipeline_paints(folders, tmp_path, kind):
    from diffusers import DiffusionPipeline

    system = compound.load(system_file(tmp_path, folders[kind]))
    ours = system.sample([{"caption": "a red disc"}], generator=torch.Generator().manual_seed(3), steps=2)
    pipe = DiffusionPipeline.from_pretrained(folders[kind])
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(["a red disc"], num_inference_steps=2, generator=torch.Generator().manual_seed(3)).images
    assert np.array_equal(np.asarray(ours[0]["image"]), np.asarray(theirs[0]))
