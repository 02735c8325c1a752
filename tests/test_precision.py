"""What large models need to fit: `dtype="bfloat16"` scores what float32 scores, to bfloat16's precision,
and trains; `gradient_checkpointing=true` leaves every gradient as it was; a model that cannot checkpoint
is refused by name."""

import numpy as np
import pytest
import torch
from chat_models import chat_lm
from conftest import perturb

import compound
from compound.diagnostics import CompoundError
from compound.testing import tiny_sd3, tiny_sdxl


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    return {
        "llama": chat_lm(root / "llama", "llama3"),
        "sdxl": tiny_sdxl(root / "sdxl", seed=2),
        "sd3": tiny_sd3(root / "sd3", seed=3),
    }


def system(tmp_path, folders, kind, options=""):
    """A one-node system over the folder, and a batch of two preference pairs for it."""
    path = tmp_path / f"{kind}{abs(hash(options))}.cmp"
    if kind == "llama":
        path.write_text(
            f'system single\ncomponent writer = causal_lm("{folders[kind]}", lora(r=4){options})\n'
            "input prompt : text\nanswer : text ~ writer(prompt)\noutput answer\n"
        )
        chosen = [{"prompt": "a red disc", "answer": "bright"}, {"prompt": "a blue sky", "answer": "wide"}]
        rejected = [{"prompt": "a red disc", "answer": "dull"}, {"prompt": "a blue sky", "answer": "flat"}]
        return compound.load(path), "writer", chosen, rejected
    from test_families import pairs

    path.write_text(
        "system single\n"
        f'component painter = diffusion("{folders[kind]}", resolution=32, lora(r=4){options})\n'
        "input caption : text\nimage : image ~ painter(caption)\noutput image\n"
    )
    chosen, rejected = pairs()
    return compound.load(path), "painter", chosen, rejected


def lora_gradients(loaded, name, chosen, rejected):
    """The loss and the LoRA weights' gradients of one SysDPO step."""
    backend = loaded.backend(name)
    perturb(backend.model, scale=0.2, only="lora_B")
    out = loaded.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(5))
    loss = compound.sysdpo_loss(out, beta=0.1)
    loss.backward()
    grads = {k: p.grad.float().clone() for k, p in backend.model.named_parameters() if p.requires_grad}
    return loss.detach(), out, grads


@pytest.mark.parametrize("kind", ["llama", "sdxl", "sd3"])
def test_bfloat16_scores_what_float32_scores_and_trains(folders, tmp_path, kind):
    full = lora_gradients(*system(tmp_path, folders, kind))
    half = lora_gradients(*system(tmp_path, folders, kind, ', dtype="bfloat16"'))
    # bfloat16 keeps 8 bits of mantissa: a diffusion score, T times a mean squared error (-1,000 here), is
    # as precise as 2^-8 of itself, and a log ratio is the difference of two such scores
    scores = max(float(t.abs().max()) for t in full[1].policy[next(iter(full[1].policy))])
    floor = 2 * 2**-8 * scores if kind != "llama" else 0.0
    for ours, theirs in ((half[1].chosen, full[1].chosen), (half[1].rejected, full[1].rejected)):
        assert torch.isfinite(ours).all()
        assert ours.dtype == torch.float32  # the sums are taken in float32
        tolerance = max(0.05 * theirs.abs().max().item(), floor)
        assert torch.allclose(ours, theirs, rtol=0.05, atol=tolerance), (ours, theirs, tolerance)
    assert half[0].item() == pytest.approx(full[0].item(), rel=0.05)
    assert half[2] and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in half[2].values())


@pytest.mark.parametrize("kind", ["sdxl", "sd3"])
def test_bfloat16_paints_what_float32_paints(folders, tmp_path, kind):
    """The denoiser in bfloat16 and the VAE kept in float32 (`force_upcast`): the same picture to a few
    levels of 255, where the pipelines alone would fail on the dtype mismatch."""
    painted = []
    for options in ("", ', dtype="bfloat16"'):
        loaded = system(tmp_path, folders, kind, options)[0]
        row = loaded.sample([{"caption": "a red disc"}], generator=torch.Generator().manual_seed(3), steps=4)
        painted.append(np.asarray(row[0]["image"], dtype=float))
    assert painted[0].std() > 10  # a picture, not a flat field
    assert np.abs(painted[0] - painted[1]).mean() < 2.0


@pytest.mark.parametrize("kind", ["llama", "sdxl", "sd3"])
def test_gradient_checkpointing_leaves_every_gradient_as_it_was(folders, tmp_path, kind):
    plain = lora_gradients(*system(tmp_path, folders, kind))
    loaded = system(tmp_path, folders, kind, ", gradient_checkpointing=true")
    model = loaded[0].backend(loaded[1]).model
    calls = []
    for layer in model.modules():
        if getattr(layer, "gradient_checkpointing", False):
            inner = layer._gradient_checkpointing_func
            layer._gradient_checkpointing_func = lambda *a, _inner=inner, **k: (
                calls.append(1) or _inner(*a, **k)
            )
    checkpointed = lora_gradients(*loaded)
    assert calls  # the layers were recomputed, not merely flagged
    assert checkpointed[0].item() == pytest.approx(plain[0].item(), abs=1e-6)
    assert plain[2].keys() == checkpointed[2].keys()
    for key, grad in plain[2].items():
        assert torch.allclose(checkpointed[2][key], grad, atol=1e-6), key


def test_a_model_that_cannot_checkpoint_is_refused_by_name(tiny, write_system):
    path = write_system(
        f'system single\ncomponent painter = diffusion("{tiny["painter"]}", gradient_checkpointing=true)\n'
        "input caption : text\nimage : image ~ painter(caption)\noutput image\n"
    )
    with pytest.raises(
        CompoundError, match=r"component 'painter'.*gradient_checkpointing=true.*TinyDenoiser"
    ):
        compound.load(path)
