"""Loading Hugging Face-format components: where a model is, its dtype, and its LoRA adapters."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from compound import ir
from compound.backends.base import component_error, int_option, number_option

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LORA_OPTIONS = ("r", "alpha", "dropout", "target_modules")


#: Weight files that are Python pickles: loading one can run code, so compound never does.
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def resolve(component: ir.Component, root: Path) -> str:
    """The model's folder (relative to the `.cmp` file), or a hub id when no such folder exists."""
    try:
        local = (root / component.path).resolve(strict=False)
        found = local.exists()
    except (OSError, RuntimeError) as e:  # a symlink loop, a path too long, ...
        raise component_error(component, f"cannot use the model path {component.path!r}: {e}") from None
    if found:
        if not local.is_dir():
            raise component_error(
                component, f"{local} is a file; a model is a folder saved with save_pretrained"
            )
        return str(local)
    if component.path.count("/") == 1 and not component.path.startswith((".", "/")):
        return component.path  # a hub id: from_pretrained reads the local cache (HF_HUB_OFFLINE) or downloads
    raise component_error(component, f"no model folder at {local}")


def safetensors_only(component: ir.Component, folder: Path) -> None:
    """Refuse a model folder whose weights are pickles only, saying how to convert them."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")) or any(folder.glob("*.gguf")):
        return
    pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
    if pickles:
        raise component_error(
            component,
            f"{folder} holds its weights as {', '.join(pickles)}, a Python pickle, which can run code when "
            "loaded; compound loads safetensors only. Convert them once, in a Python you trust: "
            "Model.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)",
        )


def checkpointing(model: nn.Module, component: ir.Component) -> None:
    """Turn on gradient checkpointing when the component asks (`gradient_checkpointing=true`): activations
    recomputed in the backward pass instead of kept, for models whose activations do not fit.

    transformers checkpoints a decoder layer only while it is in training mode, and compound scores in eval
    mode (no dropout, as the reference scores); so those layers alone are marked as training, which
    changes nothing they compute: their attention and dropout modules stay in eval mode."""
    if component.options.get("gradient_checkpointing") is not True:
        return
    enable = next(
        (
            getattr(model, name)
            for name in ("activation_checkpointing_enable", "enable_gradient_checkpointing")
            if hasattr(model, name)
        ),
        None,
    )
    try:
        if enable is None or not getattr(model, "supports_gradient_checkpointing", True):
            raise ValueError(f"{type(model).__name__} has no gradient checkpointing")
        enable()
    except ValueError as e:
        raise component_error(component, f"gradient_checkpointing=true: {e}") from None
    from transformers.modeling_layers import GradientCheckpointingLayer

    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer) and layer.gradient_checkpointing:
            layer.training = True


def dtype_option(component: ir.Component) -> torch.dtype:
    """The component's `dtype=` option as a torch dtype (float32 by default)."""
    name = str(component.options.get("dtype", "float32"))
    if name not in DTYPES:
        raise component_error(component, f"dtype={name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


def lora(model: nn.Module, component: ir.Component, targets: Sequence[str] | None) -> nn.Module:
    """Wrap `model` in PEFT LoRA adapters when the component asks for `lora(...)`."""
    spec = component.options.get("lora")
    if spec is None:
        return model
    if not isinstance(spec, ir.Call):
        raise component_error(component, "lora takes options, as in lora(r=8, alpha=16)")
    from peft import LoraConfig, get_peft_model

    options = dict(spec.options)
    unknown = sorted(set(options) - set(LORA_OPTIONS))
    if unknown:
        raise component_error(
            component, f"lora has no option {', '.join(unknown)} (options: {', '.join(LORA_OPTIONS)})"
        )
    rank = int_option(component, options, "r", 8)
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())  # GPT-2 style transposed linears
    if _names(options.get("target_modules")) is None and not targets:
        targets = _attention_projections(model, component)
    config = LoraConfig(
        fan_in_fan_out=conv1d,
        r=rank,
        lora_alpha=number_option(component, options, "alpha", 2 * rank),  # type: ignore[arg-type]  # PEFT says int; scaling is alpha / r
        lora_dropout=number_option(component, options, "dropout", 0.0),
        target_modules=_names(options.get("target_modules")) or (list(targets) if targets else None),
        init_lora_weights=True,
    )
    # LoRA's A matrices start random: seed them from the component's name, so loading is reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(hashlib.sha256(component.name.encode()).hexdigest()[:8], 16))
        return get_peft_model(model, config)


def _attention_projections(model: nn.Module, component: ir.Component) -> list[str] | None:
    """LoRA targets for a model type PEFT has no default for (Phi-3, Qwen-MoE, ...): the linear layers of
    its attention blocks, by name, said aloud; None when PEFT knows the type."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind is None or kind in DEFAULTS:
        return None
    names = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if ("attn" in name or "attention" in name)
            and (isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D")
        }
    )
    if not names:
        raise component_error(
            component, f'PEFT has no default LoRA targets for {kind}: give lora(target_modules="...")'
        )
    print(
        f"component '{component.name}': PEFT has no default LoRA targets for {kind}; "
        f"adapting its attention projections {', '.join(names)}",
        file=sys.stderr,
    )
    return names


def _names(value: ir.Value | None) -> list[str] | None:
    """`"c_attn, c_proj"` as module names (PEFT would read a single string as a regular expression)."""
    return [n.strip() for n in value.split(",") if n.strip()] if isinstance(value, str) else None
