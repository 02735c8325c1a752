import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The texts the tests' tiny tokenizers are fit to (any text encodes; these set the merges).
CORPUS = (
    "a lake as the ice grows",
    "three scenes of a lake",
    "a disc growing",
    "a scene getting darker",
    "a dot moving right",
    "Question: what is two plus two? Answer: four",
    "Candidate answers:\n1. four\n2. five",
    "small medium large huge tiny",
    "0123456789 + = ; , . : ? !",
)


@pytest.fixture
def compile_text():
    """Compile a program given as text; returns the `Compilation`."""
    from compound.compiler import compile_source

    def run(text: str, file: str = "example.cmp"):
        return compile_source(text, file)

    return run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny real models, built once per session: `lm`, `lm2`, `painter` (TinyDenoiser),
    `unet` (diffusers' UNet2DConditionModel), `vpred` (v-prediction)."""
    from compound.testing import tiny_causal_lm, tiny_diffusion

    root = tmp_path_factory.mktemp("models")
    return {
        "lm": tiny_causal_lm(root / "lm", CORPUS, seed=0),
        "lm2": tiny_causal_lm(root / "lm2", CORPUS, seed=1),
        "painter": tiny_diffusion(root / "painter", CORPUS, seed=2),
        "unet": tiny_diffusion(root / "unet", CORPUS, denoiser="unet", seed=3),
        "vpred": tiny_diffusion(root / "vpred", CORPUS, prediction_type="v_prediction", seed=4),
    }


@pytest.fixture
def write_system(tmp_path):
    """Write a .cmp file; model paths in it may be absolute."""

    def write(text: str, name: str = "system.cmp"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def pipeline_parts(folder):
    """A diffusion folder's tokenizer, text encoder and training scheduler, loaded apart from compound (as
    diffusers' training scripts load them: a DDPMScheduler from the folder's scheduler config)."""
    from diffusers import DDPMScheduler
    from transformers import AutoTokenizer, CLIPTextModel

    return (
        AutoTokenizer.from_pretrained(folder / "tokenizer"),
        CLIPTextModel.from_pretrained(folder / "text_encoder"),
        DDPMScheduler.from_pretrained(folder / "scheduler"),
    )


def perturb(module, scale: float = 0.05, seed: int = 0, only: str | None = None) -> None:
    """Move trainable weights deterministically, so that the policy differs from its reference."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.requires_grad and (only is None or only in name):
                p.add_(scale * torch.randn(p.shape, generator=generator))


def launch_two(*args) -> subprocess.CompletedProcess[str]:
    """`accelerate launch --multi_gpu --num_processes 2 -m compound ARGS` (gloo on a CPU-only machine)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    return subprocess.run(
        [*launch, "-m", "compound", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
