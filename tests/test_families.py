"""Diffusion families users bring: scores independent of the sampling scheduler, equal to diffusers'
Diffusion-DPO scripts (SD, SDXL) and to Flow-DPO (SD3, Flux), sampling equal to the family's own pipeline,
LoRA exported for diffusers, the storyboard end to end, unsupported folders named."""

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
from compound.testing import tiny_flux, tiny_sd, tiny_sd3, tiny_sdxl

SCHEDULERS = [
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "LMSDiscreteScheduler",
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
        "sd3": tiny_sd3(root / "sd3", seed=3),
        "sd3-no-t5": tiny_sd3(root / "sd3-no-t5", t5=False, seed=4),
        "flux": tiny_flux(root / "flux", seed=5),
        "flux-schnell": tiny_flux(root / "flux-schnell", guidance=False, seed=6),
    }


def system_file(tmp_path, folder, name="painter.cmp", options=", resolution=32"):
    path = tmp_path / name
    path.write_text(
        f'system single\ncomponent painter = diffusion("{folder}"{options})\n'
        "input caption : text\nimage : image ~ painter(caption)\noutput image\n"
    )
    return path


def images(seed: int, count: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


CAPTIONS = ["a disc growing", "a scene getting darker"]


def compound_loss(tmp_path, folder, beta: float):
    """compound's SysDPO loss of `pairs()` for a one-painter system over `folder` with a perturbed policy
    (draws from seed 7), and the painter's backend."""
    system = compound.load(system_file(tmp_path, folder))
    backend = system.backend("painter")
    perturb(backend.model, scale=0.05)
    out = system.log_ratio(*pairs(), generator=torch.Generator().manual_seed(7))
    return compound.sysdpo_loss(out, beta=beta), backend


def pixel_batch() -> torch.Tensor:
    """The chosen then the rejected images of `pairs()` in [-1, 1], as the training scripts feed the VAE."""
    return torch.stack(
        [
            torch.from_numpy(np.asarray(i, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            for i in images(0, 2) + images(1, 2)
        ]
    )


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


def test_a_scheduler_whose_package_is_missing_is_named(folders, tmp_path, monkeypatch):
    """A folder shipping the SDE sampler where torchsde is not installed: diffusers' own missing-package
    error (forced here, whatever this machine has), named on one line for the component, no traceback."""
    import diffusers
    from diffusers.utils import dummy_torch_and_torchsde_objects, import_utils

    monkeypatch.setattr(import_utils, "_torchsde_available", False)
    monkeypatch.setattr(
        diffusers, "DPMSolverSDEScheduler", dummy_torch_and_torchsde_objects.DPMSolverSDEScheduler
    )
    folder = tmp_path / "sde"
    shutil.copytree(folders["sd"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "DPMSolverSDEScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CompoundError) as found:
        compound.load(system_file(tmp_path, folder))
    message = str(found.value)
    assert "component 'painter'" in message
    assert f"loading {folder} needs a package that is not installed" in message
    assert "DPMSolverSDEScheduler requires the torchsde library" in message
    assert "pip install torchsde" in message  # diffusers' message spans lines: all of it is kept


def test_an_unsupported_pipeline_is_named_with_the_supported_ones(folders, tmp_path):
    folder = tmp_path / "flux"
    shutil.copytree(folders["sd"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "PixArtAlphaPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        CompoundError, match=r"names the pipeline PixArtAlphaPipeline.*StableDiffusionXLPipeline \(sdxl\)"
    ):
        compound.load(system_file(tmp_path, folder))


@pytest.mark.parametrize("kind", ["sd", "sd-v", "sdxl"])
def test_ddpm_loss_equals_the_diffusion_dpo_scripts(folders, tmp_path, kind):
    """diffusers' train_diffusion_dpo.py and train_diffusion_dpo_sdxl.py, written out independently: the
    pipeline's own prompt encoding (and SDXL's time ids), a DDPMScheduler from the folder's config, one t
    and noise per pair, the noise or (v-prediction) the velocity as target. The SD 1.5 script's loss is
    -logsigmoid(beta_dpo * (ref_diff - model_diff)), no factor 0.5: beta_dpo = beta * T; the SDXL
    script's is -logsigmoid(-0.5 * beta_dpo * (model_diff - ref_diff)): beta_dpo = 2 * beta * T. Both are
    -logsigmoid(-beta * T * (model_diff - ref_diff)), written below in the SDXL script's form.
    (Latents are the VAE's mean, compound's deterministic choice; the scripts draw a sample.)"""
    from diffusers import DDPMScheduler

    folder, beta = folders[kind], 0.001
    ours, backend = compound_loss(tmp_path, folder, beta)

    pipe = pipeline(folder)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if kind == "sdxl":
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(CAPTIONS, do_classifier_free_guidance=False)
        time_ids = pipe._get_add_time_ids(
            (32, 32), (0, 0), (32, 32), torch.float32, pipe.text_encoder_2.config.projection_dim
        ).repeat(4, 1)
        added = {"added_cond_kwargs": {"text_embeds": pooled.repeat(2, 1), "time_ids": time_ids}}
    else:
        prompt_embeds, _ = pipe.encode_prompt(CAPTIONS, "cpu", 1, do_classifier_free_guidance=False)
        added = {}
    pixels = pixel_batch()
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    seeds = torch.randint(0, 2**62, (2, 1), generator=torch.Generator().manual_seed(7))[:, 0]
    draws = [torch.Generator().manual_seed(int(s)) for s in seeds]
    t = torch.cat([torch.randint(0, 1000, (1,), generator=g) for g in draws])
    noise = torch.cat([torch.randn((1, 4, 4, 4), generator=g) for g in draws])
    t, noise = t.repeat(2), noise.repeat(2, 1, 1, 1)
    noisy = scheduler.add_noise(latents, noise, t)
    target = scheduler.get_velocity(latents, noise, t) if kind == "sd-v" else noise

    def losses(unet):
        pred = unet(noisy, t, prompt_embeds.repeat(2, 1, 1), **added).sample
        return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=[1, 2, 3]).chunk(2)

    model_w, model_l = losses(backend.model)
    with torch.no_grad(), backend.reference() as reference:
        ref_w, ref_l = losses(reference)
    inside = -0.5 * (2 * beta * 1000) * ((model_w - model_l) - (ref_w - ref_l))
    theirs = -F.logsigmoid(inside).mean()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item() - np.log(2)) > 1e-4


FLOW_SHAPE = (16, 16, 16)  # the tiny SD3 and Flux VAEs: 16 channels, 2x downsampling of 32x32 images


def pipeline(folder):
    from diffusers import DiffusionPipeline

    found = DiffusionPipeline.from_pretrained(folder, **no_t5(folder))
    found.set_progress_bar_config(disable=True)
    return found


def no_t5(folder) -> dict:
    """A pipeline saved without its T5 reloads only when told so, as diffusers asks."""
    index = json.loads((folder / "model_index.json").read_text())
    return (
        {"text_encoder_3": None, "tokenizer_3": None} if index.get("text_encoder_3") == [None, None] else {}
    )


@pytest.mark.parametrize("kind", ["sd3", "sd3-no-t5", "flux", "flux-schnell"])
def test_flow_loss_equals_flow_dpo(folders, tmp_path, kind):
    """Flow-DPO (Liu et al. 2025, Eq. 6 with a constant beta), written out independently: the pipeline's own
    prompt encoding, (z - shift) * scale latents, sigma drawn as the family's training script draws it
    (SD3: logit-normal, Flux: uniform, then the scheduler's training grid) from compound's documented
    per-pair seed, the same sigma and noise for the chosen and the rejected image, squared-norm velocity
    errors, and beta_FD = 2 * beta * T / D."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    folder, beta = folders[kind], 0.01
    ours, backend = compound_loss(tmp_path, folder, beta)

    pipe = pipeline(folder)
    flux = kind.startswith("flux")
    if flux:
        states, pooled, _ = pipe.encode_prompt(CAPTIONS, None)  # the pipeline's own T5 length: 512
    else:
        states, _, pooled, _ = pipe.encode_prompt(  # the pipeline's own T5 length: 256
            CAPTIONS, None, None, do_classifier_free_guidance=False
        )
    pixels = pixel_batch()
    vae = pipe.vae.config
    with torch.no_grad():
        x0 = (pipe.vae.encode(pixels).latent_dist.mode() - vae.shift_factor) * vae.scaling_factor
    grid = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config).sigmas
    seeds = torch.randint(0, 2**62, (2, 1), generator=torch.Generator().manual_seed(7))[:, 0]
    sigma, noise = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        u = torch.rand((1,), generator=g) if flux else torch.sigmoid(torch.randn((1,), generator=g))
        sigma.append(grid[(u * 1000).long()])
        noise.append(torch.randn((1, *FLOW_SHAPE), generator=g))
    sigma, noise = torch.cat(sigma).repeat(2), torch.cat(noise).repeat(2, 1, 1, 1)
    s4 = sigma.view(-1, 1, 1, 1)
    noisy, velocity = (1 - s4) * x0 + s4 * noise, noise - x0
    pe, pp = states.repeat(2, 1, 1), pooled.repeat(2, 1)

    def errors(transformer):
        if flux:
            packed = FluxPipeline._pack_latents(noisy, 4, 16, 16, 16)
            ids = FluxPipeline._prepare_latent_image_ids(4, 8, 8, noisy.device, noisy.dtype)
            guidance = torch.full((4,), 3.5) if transformer.config.guidance_embeds else None
            pred = transformer(
                hidden_states=packed,
                timestep=sigma,
                guidance=guidance,
                pooled_projections=pp,
                encoder_hidden_states=pe,
                txt_ids=torch.zeros(pe.shape[1], 3),
                img_ids=ids,
            ).sample
            pred = FluxPipeline._unpack_latents(pred, 32, 32, 2)
        else:
            pred = transformer(
                hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=pe, pooled_projections=pp
            ).sample
        return ((pred.float() - velocity.float()) ** 2).sum(dim=[1, 2, 3]).chunk(2)

    model_w, model_l = errors(backend.model)
    with torch.no_grad(), backend.reference() as reference:
        ref_w, ref_l = errors(reference)
    beta_fd = 2 * beta * 1000 / (16 * 16 * 16)
    theirs = -F.logsigmoid(-(beta_fd / 2) * ((model_w - ref_w) - (model_l - ref_l))).mean()
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert abs(ours.item() - np.log(2)) > 1e-4


@pytest.mark.parametrize("kind", ["sd", "sd-v", "sdxl", "sd3", "sd3-no-t5", "flux", "flux-schnell"])
def test_sampling_paints_what_the_familys_own_pipeline_paints(folders, tmp_path, kind):
    system = compound.load(system_file(tmp_path, folders[kind]))
    ours = system.sample([{"caption": "a red disc"}], generator=torch.Generator().manual_seed(3), steps=2)
    extra = {"height": 32, "width": 32} if kind.startswith(("sd3", "flux")) else {}
    theirs = pipeline(folders[kind])(
        ["a red disc"], num_inference_steps=2, generator=torch.Generator().manual_seed(3), **extra
    ).images
    assert np.array_equal(np.asarray(ours[0]["image"]), np.asarray(theirs[0]))


@pytest.mark.parametrize("kind", ["sd", "sd-v", "sdxl", "sd3", "sd3-no-t5", "flux", "flux-schnell"])
def test_a_trained_lora_exports_for_diffusers_merged_or_as_an_adapter(folders, tmp_path, kind):
    """LoRA on the family's attention projections; `compound export`'s folder loads with
    DiffusionPipeline.from_pretrained and paints what the trained system paints, and the adapter form loads
    with diffusers' own pipe.load_lora_weights."""
    system = compound.load(system_file(tmp_path, folders[kind], options=", resolution=32, lora(r=4)"))
    backend = system.backend("painter")
    perturb(backend.model, scale=0.2, only="lora_")
    ours = system.sample([{"caption": "a red disc"}], generator=torch.Generator().manual_seed(3), steps=2)
    backend.export(tmp_path / "adapter", merge=False)
    backend.export(tmp_path / "merged", merge=True)
    extra = {"height": 32, "width": 32} if kind.startswith(("sd3", "flux")) else {}
    adapted = pipeline(tmp_path / "adapter")
    adapted.load_lora_weights(tmp_path / "adapter")
    for pipe in (pipeline(tmp_path / "merged"), adapted):
        theirs = pipe(
            ["a red disc"], num_inference_steps=2, generator=torch.Generator().manual_seed(3), **extra
        ).images
        assert np.abs(np.asarray(ours[0]["image"], dtype=int) - np.asarray(theirs[0], dtype=int)).max() <= 1
    base = pipeline(folders[kind])(
        ["a red disc"], num_inference_steps=2, generator=torch.Generator().manual_seed(3), **extra
    ).images
    assert not np.array_equal(
        np.asarray(ours[0]["image"]), np.asarray(base[0])
    )  # the LoRA changed what it paints


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_a_storyboard_of_real_families_samples_pairs_trains_and_exports(folders, tmp_path, kind):
    """The paper's storyboard with a Llama-class chat writer and an SDXL or Flux painter, through the CLI:
    sample, pair, train both with LoRA, export; the exported folders load with transformers and diffusers
    and generate what the trained system generates."""
    from chat_models import chat_lm
    from test_sampling_flow import invoke
    from transformers import AutoModelForCausalLM

    writer = chat_lm(tmp_path / "writer", "llama3")
    cmp = tmp_path / "storyboard.cmp"
    cmp.write_text(
        "system storyboard\n"
        f'component writer = causal_lm("{writer}", lora(r=4))\n'
        f'component painter = diffusion("{folders[kind]}", resolution=32, steps=2, lora(r=4))\n'
        'input request : text\nplan : text ~ writer(request, template="Three scenes, {request}:\\n")\n'
        "scene[3] : text = line(plan, i)\nimage[3] : image ~ painter(scene[i])\noutput image\n"
    )
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"request": "a disc growing"}\n{"request": "a scene getting darker"}\n')
    invoke("sample", cmp, "--inputs", inputs, "--n", 3, "--out", tmp_path / "samples", "--max-new-tokens", 24)
    samples = tmp_path / "samples" / "samples.jsonl"
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    for row in rows:  # a user's own scorer: the brightness of the first image
        row["score"] = float(np.asarray(Image.open(tmp_path / "samples" / row["values"]["image"][0])).mean())
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    invoke("pairs", tmp_path / "samples", "--out", tmp_path / "pairs.jsonl")
    pairs = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert pairs
    run = tmp_path / "run"
    invoke(
        "train", cmp, "--data", tmp_path / "pairs.jsonl", "--out", run, "--steps", 2, "--lr", 0.05, "--quiet"
    )
    invoke("export", run, "--out", tmp_path / "export")

    trained = compound.load(
        cmp, weights=run / "final", options={n: {"lora": {"r": 4}} for n in ("writer", "painter")}
    )
    tokens = torch.tensor([[5, 9, 14, 3, 7]])
    lm = trained.backend("writer").model
    base = AutoModelForCausalLM.from_pretrained(writer)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "writer")
    with torch.no_grad():
        ours, theirs, before = (m(tokens).logits for m in (lm, exported, base))
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, before, atol=1e-4)  # training moved the writer
    painter = trained.backend("painter")
    painted = painter.sample(["a red disc"], torch.Generator().manual_seed(3), steps=2)
    extra = {"height": 32, "width": 32} if kind == "flux" else {}
    theirs_image = pipeline(tmp_path / "export" / "painter")(
        ["a red disc"], num_inference_steps=2, generator=torch.Generator().manual_seed(3), **extra
    ).images[0]
    before_image = pipeline(folders[kind])(
        ["a red disc"], num_inference_steps=2, generator=torch.Generator().manual_seed(3), **extra
    ).images[0]
    assert np.abs(np.asarray(painted[0], dtype=int) - np.asarray(theirs_image, dtype=int)).max() <= 1
    assert not np.array_equal(np.asarray(painted[0]), np.asarray(before_image))  # training moved the painter


@pytest.mark.parametrize("kind", ["sdxl", "flux"])
def test_the_cached_reference_scores_what_the_copied_one_does(folders, tmp_path, kind):
    """`reference="cached"`: the reference's scores computed once before training, from the same draws."""
    from compound.reference import ReferenceCache

    cmp = system_file(tmp_path, folders[kind], options=", resolution=32, lora(r=4)")
    chosen, rejected = pairs()
    losses = {}
    for strategy in ("copy", "cached"):
        system = compound.load(cmp, reference=strategy)
        cache = None
        if strategy == "cached":
            found = system.reference_cache(chosen, rejected, generator=torch.Generator().manual_seed(3))
            cache = ReferenceCache.load(found.save(tmp_path / "reference.safetensors"))
        perturb(system.backend("painter").model, scale=0.3, only="lora_")
        out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(3), cache=cache)
        losses[strategy] = compound.sysdpo_loss(out, beta=0.01).item()
    assert abs(losses["copy"] - np.log(2)) > 1e-4
    assert losses["cached"] == pytest.approx(losses["copy"], abs=1e-6)
