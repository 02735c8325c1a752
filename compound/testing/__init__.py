"""Tiny but real models, built from configs and saved with `save_pretrained`.

For tests, examples and experiments that must run anywhere: they load through
the same `from_pretrained` path a user's checkpoint takes. A GPT-2 causal LM
with a byte-level BPE tokenizer trained in process on a corpus of the caller's
texts, a diffusion folder of compound's own layout (`model_index.json`, a
denoiser, a DDPM scheduler, a CLIP text encoder and its tokenizer), and tiny
pipelines of diffusers' own classes saved by the pipeline's `save_pretrained`
(SD, SDXL, SD3, Flux). No network is needed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from compound.compiler import compile_file

EOS = "<|endoftext|>"
PAD = "<pad>"
#: A few generic texts: byte-level tokenizers encode any text; their merges come from the corpus.
CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is two plus two? Answer: four",
    "0123456789 + = ; , . : ? !",
)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Initialize under `seed` without touching the caller's random state: the same seed, the same model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def byte_tokenizer(
    corpus: Iterable[str] = CORPUS, vocab_size: int = 320, max_length: int | None = None
) -> Any:
    """A byte-level BPE tokenizer trained on `corpus`: it encodes any text and decodes it back exactly."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(corpus), vocab_size=vocab_size, min_frequency=1, special_tokens=[EOS, PAD], show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, pad_token=PAD
    )
    if max_length is not None:
        tokenizer.model_max_length = max_length
    return tokenizer


def gpt2(tokenizer: Any, *, layers: int = 2, width: int = 64, heads: int = 2, positions: int = 96) -> Any:
    """A freshly initialized GPT-2 without dropout, its special ids taken from `tokenizer`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=positions,
            n_embd=width,
            n_layer=layers,
            n_head=heads,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=pad,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )


def clip_text_encoder(tokenizer: Any, *, width: int = 32, positions: int = 16) -> Any:
    """A freshly initialized one-layer CLIP text encoder, its special ids taken from `tokenizer`."""
    from transformers import CLIPTextConfig, CLIPTextModel

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=positions,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=pad,
        )
    )


def tiny_causal_lm(
    path: str | Path,
    corpus: Iterable[str] = CORPUS,
    *,
    layers: int = 2,
    width: int = 32,
    heads: int = 2,
    positions: int = 256,
    vocab_size: int = 320,
    seed: int = 0,
) -> Path:
    """Save a freshly initialized GPT-2 (no dropout) and its tokenizer to `path`."""
    path = Path(path)
    tokenizer = byte_tokenizer(corpus, vocab_size)
    with seeded(seed):
        model = gpt2(tokenizer, layers=layers, width=width, heads=heads, positions=positions)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_diffusion(
    path: str | Path,
    corpus: Iterable[str] = CORPUS,
    *,
    sample_size: int = 16,
    channels: int = 1,
    denoiser: str = "tiny",
    prediction_type: str = "epsilon",
    train_timesteps: int = 1000,
    width: int = 32,
    seed: int = 0,
) -> Path:
    """Save a diffusion folder: a denoiser (`tiny` TinyDenoiser or `unet` UNet2DConditionModel),
    a DDPM scheduler, a one-layer CLIP text encoder and its tokenizer, and `model_index.json`."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from compound.testing.denoiser import TinyDenoiser

    path = Path(path)
    tokenizer = byte_tokenizer(corpus, max_length=16)
    with seeded(seed):
        text_encoder = clip_text_encoder(tokenizer, width=width, positions=16)
        if denoiser == "tiny":
            model: Any = TinyDenoiser(
                sample_size=sample_size,
                in_channels=channels,
                out_channels=channels,
                channels=(width, 2 * width),
                cross_attention_dim=width,
            )
            unet_entry = ["compound", "TinyDenoiser"]
        elif denoiser == "unet":
            model = UNet2DConditionModel(
                sample_size=sample_size,
                in_channels=channels,
                out_channels=channels,
                layers_per_block=1,
                block_out_channels=(16, 32),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=width,
                norm_num_groups=8,
                attention_head_dim=4,
            )
            unet_entry = ["diffusers", "UNet2DConditionModel"]
        else:
            raise ValueError(f"denoiser={denoiser!r}: use 'tiny' or 'unet'")
    scheduler = DDPMScheduler(
        num_train_timesteps=train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
    )
    save_pipeline(path, model, unet_entry, scheduler, text_encoder, tokenizer)
    return path


def save_pipeline(
    path: Path, unet: Any, unet_entry: list[str], scheduler: Any, text_encoder: Any, tokenizer: Any
) -> None:
    """Save a denoiser, its DDPM scheduler, CLIP text encoder and tokenizer as a diffusers pipeline folder
    (`model_index.json` naming each part), the layout the `diffusion` backend loads."""
    unet.save_pretrained(path / "unet")
    scheduler.save_pretrained(path / "scheduler")
    text_encoder.save_pretrained(path / "text_encoder")
    tokenizer.save_pretrained(path / "tokenizer")
    index = {
        "_class_name": "CompoundDiffusion",
        "unet": unet_entry,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))


def tiny_models(cmp_file: str | Path, corpus: Iterable[str] = CORPUS, seed: int = 0) -> None:
    """Build a tiny model for every component of a `.cmp` file, in the folders it names."""
    cmp_file = Path(cmp_file)
    system = compile_file(cmp_file)
    builders: dict[str, Callable[..., Path]] = {"causal_lm": tiny_causal_lm, "diffusion": tiny_diffusion}
    for k, component in enumerate(system.components):
        builders[component.kind](cmp_file.parent / component.path, corpus, seed=seed + k)


def clip_tokenizer(pad: str = "<|endoftext|>", max_length: int = 77) -> Any:
    """A character-level CLIP tokenizer built in process: CLIP's byte alphabet (each byte alone and as a
    word end), its two special tokens, no merges; any text encodes. `pad`: SDXL's second tokenizer pads
    with "!"."""
    from transformers import CLIPTokenizer

    alphabet = _bytes_to_unicode()
    vocab = {c: k for k, c in enumerate(alphabet)}
    vocab |= {c + "</w>": len(alphabet) + k for k, c in enumerate(alphabet)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token=pad, model_max_length=max_length)


def _bytes_to_unicode() -> list[str]:
    """GPT-2's and CLIP's printable stand-ins for the 256 bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def _clip(tokenizer: Any, width: int, projection: int | None = None, layers: int = 2) -> Any:
    """A CLIP text encoder (with a projection, as SDXL's second one, when `projection` is given)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection or width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(size: int) -> Any:
    """A tiny AutoencoderKL: 8x downsampling (four blocks), four latent channels, SDXL's scaling."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=size,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def tiny_sd(path: str | Path, *, size: int = 32, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save a tiny Stable Diffusion 1.x-class pipeline (`StableDiffusionPipeline.save_pretrained`): a
    UNet2DConditionModel over a VAE's latents, one CLIP text encoder, a PNDM scheduler as SD 1.5 ships."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    path = Path(path)
    with seeded(seed):
        tokenizer = clip_tokenizer()
        unet = UNet2DConditionModel(
            sample_size=size // 8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=32,
        )
        scheduler = PNDMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            skip_prk_steps=True,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type=prediction_type,
        )
        pipeline: Any = StableDiffusionPipeline(
            vae=_vae(size),
            text_encoder=_clip(tokenizer, 32),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def tiny_sdxl(path: str | Path, *, size: int = 32, seed: int = 0) -> Path:
    """Save a tiny SDXL pipeline (`StableDiffusionXLPipeline.save_pretrained`): two CLIP text encoders of
    different widths (the second with a projection), a UNet with SDXL's text-time micro-conditioning, a
    VAE, and SDXL's Euler scheduler."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    path = Path(path)
    first, second, projection, time_dim = 32, 48, 40, 8
    with seeded(seed):
        tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer(pad="!")
        unet = UNet2DConditionModel(
            sample_size=size // 8,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            cross_attention_dim=first + second,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=projection + 6 * time_dim,
            norm_num_groups=32,
        )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
            steps_offset=1,
        )
        pipeline: Any = StableDiffusionXLPipeline(
            vae=_vae(size),
            text_encoder=_clip(tokenizer, first),
            text_encoder_2=_clip(tokenizer, second, projection),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def t5_tokenizer(max_length: int = 512) -> Any:
    """A character-level T5 (Unigram) tokenizer built in process: <pad>, </s>, <unk>, the word marker and
    printable characters; any text encodes (unknown characters as <unk>)."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "▁", *(chr(c) for c in range(33, 127))]
    return T5Tokenizer(vocab=[(p, 0.0) for p in pieces], extra_ids=0, model_max_length=max_length)


def _t5(tokenizer: Any, width: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=16,
        d_ff=2 * width,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config)


def _flow_vae(scaling: float, shift: float) -> Any:
    """A tiny 16-channel AutoencoderKL without quant convs, as SD3's and Flux's (2x downsampling)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=scaling,
        shift_factor=shift,
    )


def tiny_sd3(path: str | Path, *, t5: bool = True, seed: int = 0) -> Path:
    """Save a tiny Stable Diffusion 3 pipeline (`StableDiffusion3Pipeline.save_pretrained`): an MMDiT
    transformer over 16-channel latents, two CLIP encoders with projections and (unless `t5=False`) a T5
    encoder, SD3's VAE constants and flow-matching scheduler (shift 3)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    path = Path(path)
    with seeded(seed):
        tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
        pipeline: Any = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(
                sample_size=16,
                patch_size=2,
                in_channels=16,
                out_channels=16,
                num_layers=2,
                attention_head_dim=8,
                num_attention_heads=4,
                joint_attention_dim=96,
                caption_projection_dim=32,
                pooled_projection_dim=80,
                pos_embed_max_size=16,
            ),
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
            vae=_flow_vae(1.5305, 0.0609),
            text_encoder=_clip(tokenizer, 32, 32),
            tokenizer=tokenizer,
            text_encoder_2=_clip(tokenizer_2, 48, 48),
            tokenizer_2=tokenizer_2,
            text_encoder_3=_t5(tokenizer_3, 96) if t5 else None,
            tokenizer_3=tokenizer_3 if t5 else None,
        )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def tiny_flux(path: str | Path, *, guidance: bool = True, seed: int = 0) -> Path:
    """Save a tiny Flux pipeline (`FluxPipeline.save_pretrained`): a transformer over packed 16-channel
    latents with the guidance embedding of FLUX.1-dev (`guidance=False`: schnell), a CLIP and a T5
    encoder, Flux's VAE constants and flow-matching scheduler with dynamic shifting."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    path = Path(path)
    with seeded(seed):
        tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
        pipeline: Any = FluxPipeline(
            transformer=FluxTransformer2DModel(
                patch_size=1,
                in_channels=64,
                num_layers=1,
                num_single_layers=1,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=96,
                pooled_projection_dim=32,
                guidance_embeds=guidance,
                axes_dims_rope=(4, 6, 6),
            ),
            scheduler=FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=1000,
                shift=3.0,
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            vae=_flow_vae(0.3611, 0.1159),
            text_encoder=_clip(tokenizer, 32),
            tokenizer=tokenizer,
            text_encoder_2=_t5(tokenizer_2, 96),
            tokenizer_2=tokenizer_2,
        )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path
