"""`compound export`: trained components load with plain from_pretrained and give the same numbers."""

import pytest
import torch
from synth import storyboard_cmp, storyboard_prefs
from test_log_ratio import lm_logp
from transformers import AutoModelForCausalLM, AutoTokenizer

import compound
from compound.export import export
from compound.train import Trainer


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cmp = storyboard_cmp(root, tiny["lm"], tiny["unet"])  # diffusers' own UNet: plain diffusers loads it
    data = storyboard_prefs(root, "prefs", 8, seed=0)
    Trainer(
        cmp,
        data,
        root / "run",
        steps=3,
        batch_size=4,
        learning_rate=1e-2,
        learning_rates={"painter": 1e-3},
        quiet=True,
        report_to=[],
    ).train()
    return root, cmp, compound.load(cmp, weights=root / "run" / "final")


def test_exported_causal_lm_gives_the_same_log_probs(trained, tiny):
    from peft import PeftModel

    root, _, system = trained
    writer = system.backend("writer")
    export(root / "run", root / "merged")
    export(root / "run", root / "adapter", adapter=True)
    tokenizer = AutoTokenizer.from_pretrained(root / "merged" / "writer")
    merged = AutoModelForCausalLM.from_pretrained(root / "merged" / "writer")
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny["lm"]), root / "adapter" / "writer"
    )
    base = AutoModelForCausalLM.from_pretrained(tiny["lm"])
    for prompt, text in [("Two scenes, a lake:\n", "disc small\ndisc large"), ("Q: hi\nA:", " there")]:
        inside = lm_logp(writer.model, tokenizer, prompt, text)
        assert lm_logp(merged, tokenizer, prompt, text) == pytest.approx(inside, abs=1e-4)
        assert lm_logp(adapted, tokenizer, prompt, text) == pytest.approx(inside, abs=1e-4)
        assert abs(lm_logp(base, tokenizer, prompt, text) - inside) > 1e-3  # training moved it


def test_exported_diffusion_folder_gives_the_same_denoiser_outputs(trained, tiny):
    from diffusers import UNet2DConditionModel

    root, _, system = trained
    painter = system.backend("painter")
    unet = UNet2DConditionModel.from_pretrained(root / "merged" / "painter" / "unet")
    base = UNet2DConditionModel.from_pretrained(tiny["unet"] / "unet")
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn((2, 1, 16, 16), generator=g), torch.tensor([10, 500])
    hidden = torch.stack([painter.family.caption(c).states for c in ("disc small", "disc large")])
    with torch.no_grad():
        inside = painter.model(x, t, encoder_hidden_states=hidden).sample
        assert torch.allclose(unet(x, t, encoder_hidden_states=hidden).sample, inside, atol=1e-5)
        assert not torch.allclose(base(x, t, encoder_hidden_states=hidden).sample, inside, atol=1e-4)
    for part in ("scheduler", "text_encoder", "tokenizer", "model_index.json"):
        assert (root / "merged" / "painter" / part).exists()
