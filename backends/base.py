"""The protocol every component backend follows, and what they share.

A backend is an `nn.Module` holding one component's model. The compiled system
hands it, for every factor that uses the component (every row, node, chosen and
rejected side), a conditioning text and the node's value, and asks for a
`score`: the log-likelihood of the value (causal LMs, exact) or a surrogate of it
(diffusion: minus T times the denoising loss, PAPER.md point 5). A node's log
ratio is the policy's score minus the reference's.

The reference is chosen per component (`reference=` in the `.cmp` file):
`copy`, a frozen copy of the model; `adapter`, the same model with its LoRA
adapters disabled (one copy of the weights in memory); `cached`, reference
scores computed once before training and read back (`compound.reference`).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compound import ir
from compound.backends import Signature
from compound.diagnostics import CompoundError, Diagnostic

REFERENCES = ("copy", "adapter", "cached")


class Backend(nn.Module):
    """One component's model: scores (and samples) the nodes that call it."""

    kind: ClassVar[str]
    signature: ClassVar[Signature]
    #: Module names LoRA adapts when `lora(...)` names no `target_modules`.
    lora_targets: ClassVar[Sequence[str] | None] = None
    #: The options `sample` takes (from the call, the node or the component).
    sampling: ClassVar[frozenset[str]] = frozenset()
    #: Whether `score` is an exact log-likelihood (not a surrogate such as the diffusion ELBO).
    exact: ClassVar[bool] = False

    def __init__(self, component: ir.Component, model: nn.Module, reference: str | None = None):
        super().__init__()
        self.component = component
        self.model = model
        self.reference_strategy = (
            reference
            or _option(component, "reference", None)
            or ("adapter" if "lora" in component.options else "copy")
        )
        if self.reference_strategy not in REFERENCES:
            raise self.error(f"reference={self.reference_strategy!r} is not one of {', '.join(REFERENCES)}")
        if self.reference_strategy == "adapter" and not hasattr(self.model, "disable_adapter"):
            raise self.error("reference='adapter' needs LoRA adapters: add lora(r=8) to the component")
        self.batch_size: int = int(_option(component, "batch_size", 64))
        self.source = ""  # the folder (or hub id) the model was loaded from; loaders set it
        # A frozen copy outside the module tree: not trained, not saved, not moved by accident.
        frozen = self.reference_strategy == "copy"
        self._reference_copy = [copy.deepcopy(model).requires_grad_(False).eval()] if frozen else []

    # ------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, component: ir.Component, root: Path, weights: Path | None = None, reference: str | None = None
    ) -> Backend:
        """Load the component's model from its folder (relative to `root`, the `.cmp` file's folder)."""
        raise NotImplementedError

    def error(self, message: str) -> CompoundError:
        return component_error(self.component, message)

    # ------------------------------------------------------------ scoring

    def prepare(self, condition: str, value: Any, options: Mapping[str, ir.Value]) -> Any:
        """Turn one factor's conditioning text, node value and node options into a model-ready item."""
        raise NotImplementedError

    def size(self, item: Any) -> int:
        """How big a prepared value is: its tokens for a language model (IPO and NLL average over them)."""
        return 1

    def draws(self, seed: int, item: Any) -> Any:
        """Random draws one factor needs (diffusion: timesteps and noise), from a seed; None if none."""
        return None

    def _score(self, model: nn.Module, items: Sequence[Any], draws: Sequence[Any]) -> torch.Tensor:
        """Scores of a batch of items under `model` (the policy, or the reference)."""
        raise NotImplementedError

    def score(self, items: Sequence[Any], draws: Sequence[Any], reference: bool = False) -> torch.Tensor:
        """Scores of `items` in chunks of `batch_size`: the policy's (with gradients) or the reference's."""
        if not items:
            return torch.zeros(0)
        chunks = []
        for start in range(0, len(items), self.batch_size):
            part = slice(start, start + self.batch_size)
            if reference:
                with torch.no_grad(), self.reference() as model:
                    chunks.append(self._score(model, items[part], draws[part]))
            else:
                chunks.append(self._score(self.model, items[part], draws[part]))
        return torch.cat(chunks)

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The reference model: the frozen copy, or this model with its adapters disabled."""
        if self.reference_strategy == "copy":
            yield self._reference_copy[0]
        elif self.reference_strategy == "adapter":
            with self.model.disable_adapter():
                yield self.model
        else:
            raise self.error("reference='cached': its reference scores come from a precomputed cache")

    def _apply(self, fn: Any, recurse: bool = True) -> Backend:
        """`.to()`, `.float()` and friends move the reference copy too."""
        super()._apply(fn, recurse)
        for ref in self._reference_copy:
            ref._apply(fn, recurse)
        return self

    # ------------------------------------------------------------ sampling and saving

    def sample(self, conditions: Sequence[str], generator: torch.Generator, **options: Any) -> list[Any]:
        """One value per conditioning text."""
        raise NotImplementedError

    def save_pretrained(self, path: Path) -> None:
        """Save what training changes (the model, or its LoRA adapter) in Hugging Face format."""
        raise NotImplementedError

    def export(self, path: Path, merge: bool = True) -> None:
        """Write an ordinary Hugging Face folder that loads without compound (LoRA merged if `merge`)."""
        raise NotImplementedError

    def merged(self, merge: bool) -> nn.Module:
        """The trained model: LoRA folded into the weights when `merge`, else as is (an adapter)."""
        if merge and hasattr(self.model, "merge_and_unload"):
            return self.model.merge_and_unload()
        return self.model

    def fingerprint(self) -> str:
        """A hash of the model's weights: keys cached reference scores to the model they came from."""
        digest = hashlib.sha256(self.kind.encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


def component_error(component: ir.Component, message: str) -> CompoundError:
    """An error about a component, pointing at its declaration."""
    span = component.span
    return CompoundError([Diagnostic("error", "component", f"component '{component.name}': {message}", span)])


def _option(component: ir.Component, key: str, default: Any) -> Any:
    return component.options.get(key, default)


def lora(model: nn.Module, component: ir.Component, targets: Sequence[str] | None) -> nn.Module:
    """Wrap `model` in PEFT LoRA adapters when the component asks for `lora(...)`."""
    spec = component.options.get("lora")
    if spec is None:
        return model
    if not isinstance(spec, ir.Call):
        raise component_error(component, "lora takes options, as in lora(r=8, alpha=16)")
    from peft import LoraConfig, get_peft_model

    options = dict(spec.options)
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())  # GPT-2 style transposed linears
    config = LoraConfig(
        fan_in_fan_out=conv1d,
        r=int(options.pop("r", 8)),
        lora_alpha=float(options.pop("alpha", 2 * int(spec.options.get("r", 8)))),
        lora_dropout=float(options.pop("dropout", 0.0)),
        target_modules=_names(options.pop("target_modules", None)) or (list(targets) if targets else None),
        init_lora_weights=True,
    )
    if options:
        raise component_error(
            component,
            f"lora has no option {', '.join(sorted(options))} (options: r, alpha, dropout, target_modules)",
        )
    # LoRA's A matrices start random: seed them from the component's name, so loading is reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(hashlib.sha256(component.name.encode()).hexdigest()[:8], 16))
        return get_peft_model(model, config)


def _names(value: ir.Value | None) -> list[str] | None:
    """`"c_attn, c_proj"` as module names (PEFT would read a single string as a regular expression)."""
    return [n.strip() for n in value.split(",") if n.strip()] if isinstance(value, str) else None


def resolve(component: ir.Component, root: Path) -> str:
    """The model's folder (relative to the `.cmp` file), or a hub id when no such folder exists."""
    local = (root / component.path).resolve()
    if local.exists():
        if not local.is_dir():
            raise component_error(
                component, f"{local} is a file; a model is a folder saved with save_pretrained"
            )
        return str(local)
    if component.path.count("/") == 1 and not component.path.startswith((".", "/")):
        return component.path  # a hub id: from_pretrained reads the local cache (HF_HUB_OFFLINE) or downloads
    raise component_error(component, f"no model folder at {local}")


def load_failed(component: ir.Component, source: str, what: str, error: Exception) -> CompoundError:
    """Why `from_pretrained` could not load a component, in one line."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if not Path(source).is_absolute():
        return component_error(
            component,
            f"no model folder at {component.path!r} (relative to the .cmp file), "
            f"and as a hub id it did not load: {reason}",
        )
    return component_error(component, f"{source} does not hold {what}: {reason}")


def load_trained(
    model: nn.Module, weights: Path, component: ir.Component, load_full: Callable[[Path], nn.Module]
) -> nn.Module:
    """The model with trained weights from `save_pretrained`: its LoRA adapter, or a whole model."""
    if not hasattr(model, "peft_config"):
        try:
            return load_full(weights)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise load_failed(component, str(weights), "trained weights for it", e) from None
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = weights / "adapter_model.safetensors"
    if not adapter.is_file():
        raise component_error(component, f"no trained LoRA adapter (adapter_model.safetensors) in {weights}")
    set_peft_model_state_dict(model, load_file(adapter))
    return model


def dtype_option(component: ir.Component) -> torch.dtype:
    name = str(component.options.get("dtype", "float32"))
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise component_error(component, f"dtype={name!r} is not one of {', '.join(dtypes)}")
    return dtypes[name]
