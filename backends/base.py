"""The contract between the core and a component kind: `Backend`.

A backend is an `nn.Module` holding one component's model. The core calls it
through the methods below and no others:

- loading: `load` (the base model the `.cmp` file names), `load_weights`
  (trained weights put into the policy in place: the reference stays the base
  model), `save_pretrained`, `export`;
- scoring: for every factor that uses the component (every row, node, chosen
  and rejected side), `prepare` turns a conditioning text and the node's value
  into an item, `draws` gives the item's random draws from a seed, and `score`
  returns the items' log-likelihoods (causal LMs, exact) or a surrogate of them
  (diffusion: minus T times the denoising loss, see docs/method.md) under the
  policy or the reference; `size` is an item's length (tokens), for per-token
  averages;
- sampling: `sample` (one value per conditioning text) and `candidates` (a few
  likely distinct values, for SysDPO-Sampling).

A new kind implements `load`, `prepare` and `_score` (and `sample` if systems
should run forward) and declares its `spec`; the rest has working defaults.

The reference is chosen per component (`reference=` in the `.cmp` file):
`copy`, a frozen copy of the base model; `adapter`, the same model with its
LoRA adapters disabled (one copy of the weights in memory); `cached`, reference
scores computed once before training and read back (`compound.reference`).
"""

from __future__ import annotations

import copy
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from compound import ir
from compound.backends import DEMONSTRATIONS, REFERENCES, Kind
from compound.diagnostics import CompoundError, error, needs


class Backend(nn.Module, ABC):
    """One component's model: scores (and samples) the nodes that call it."""

    #: The kind's signature and options, as the checker reads them.
    spec: ClassVar[Kind]
    #: Module names LoRA adapts when `lora(...)` names no `target_modules`.
    lora_targets: ClassVar[Sequence[str] | None] = None
    #: Whether `score` is an exact log-likelihood (not a surrogate such as the diffusion ELBO).
    exact: ClassVar[bool] = False

    def __init__(self, component: ir.Component, model: nn.Module, reference: str | None = None):
        super().__init__()
        self.component = component
        self.model = model
        self.reference_strategy: str = (
            reference
            or _text(component.options.get("reference"))
            or ("adapter" if "lora" in component.options else "copy")
        )
        if self.reference_strategy not in REFERENCES:
            raise self.error(f"reference={self.reference_strategy!r} is not one of {', '.join(REFERENCES)}")
        if self.reference_strategy == "adapter" and not hasattr(self.model, "disable_adapter"):
            raise self.error("reference='adapter' needs LoRA adapters: add lora(r=8) to the component")
        self.batch_size = int_option(component, component.options, "batch_size", 64)
        self.source = ""  # the folder (or hub id) the model was loaded from; loaders set it
        # A frozen copy of the base model outside the module tree: not trained, not saved, not moved
        # by accident.
        frozen = self.reference_strategy == "copy"
        self._reference_copy = [copy.deepcopy(model).requires_grad_(False).eval()] if frozen else []
        # Cached reference scores are keyed to the base weights they were computed from.
        self.reference_fingerprint = self.fingerprint() if self.reference_strategy == "cached" else ""

    @property
    def kind(self) -> str:
        return self.spec.name

    @property
    def sampling(self) -> frozenset[str]:
        """The options `sample` and `candidates` take."""
        return self.spec.sampling

    def sampling_options(
        self, node: ir.SampleNode, decoding: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The options a node's draws take: its component's, then its own, then the caller's decoding
        flags (a later one winning), each only if this kind's `sample` takes it; and its demonstrations."""
        merged = {**self.component.options, **node_options(node), **(decoding or {})}
        return {key: value for key, value in merged.items() if key in self.sampling}

    def error(self, message: str) -> CompoundError:
        """An error about this component, pointing at its declaration."""
        return component_error(self.component, message)

    # ------------------------------------------------------------ loading and saving

    @classmethod
    @abstractmethod
    def load(
        cls,
        component: ir.Component,
        root: Path,
        reference: str | None = None,
        trust_remote_code: bool = False,
    ) -> Backend:
        """The base model the component names (a folder relative to `root`, the `.cmp` file's folder),
        its weights from safetensors only. `trust_remote_code` comes from the caller, never from a
        `.cmp` file: only then may a model folder's own Python code run."""

    def load_weights(self, folder: Path) -> None:
        """Put trained weights from `save_pretrained` into the policy, in place: its LoRA adapter, or the
        whole model. The reference stays the base model the `.cmp` file names."""
        from safetensors import SafetensorError

        if hasattr(self.model, "peft_config"):
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            adapter = folder / "adapter_model.safetensors"
            if not adapter.is_file():
                raise self.error(f"no trained LoRA adapter (adapter_model.safetensors) in {folder}")
            try:
                set_peft_model_state_dict(self.model, load_file(adapter))
            except (OSError, SafetensorError, RuntimeError, KeyError) as e:
                raise load_failed(
                    self.component, str(adapter.resolve()), "a LoRA adapter for it", e
                ) from None
            return
        try:
            state = self.trained_state(folder)
            self.model.load_state_dict(state)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
            raise load_failed(self.component, str(folder.resolve()), "trained weights for it", e) from None

    def trained_state(self, folder: Path) -> Mapping[str, torch.Tensor]:
        """The state dict of a whole model saved by `save_pretrained` in `folder`."""
        load = getattr(type(self.model), "from_pretrained", None)
        if load is not None:
            state: Mapping[str, torch.Tensor] = load(folder, use_safetensors=True).state_dict()
            return state
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")

    def save_pretrained(self, path: Path) -> None:
        """Save what training changes (the model, or its LoRA adapter), as safetensors."""
        save = getattr(self.model, "save_pretrained", None)
        if save is not None:
            save(path, safe_serialization=True)
            return
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, path / "model.safetensors")

    def export(self, path: Path, merge: bool = True) -> None:
        """Write a folder that loads without compound (LoRA merged into the weights if `merge`)."""
        raise self.error(f"kind {self.kind!r} cannot export its model")

    def merged(self, merge: bool) -> nn.Module:
        """The trained model: LoRA folded into the weights when `merge`, else as is (an adapter)."""
        fold = getattr(self.model, "merge_and_unload", None)
        if merge and fold is not None:
            merged: nn.Module = fold()
            return merged
        return self.model

    def fingerprint(self) -> str:
        """A hash of the policy's weights: keys cached reference scores to the weights they came from."""
        digest = hashlib.sha256(self.kind.encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------ scoring

    @abstractmethod
    def prepare(self, condition: str, value: Any, options: Mapping[str, ir.Value]) -> Any:
        """Turn one factor's conditioning text, node value and node options into a model-ready item."""

    def size(self, item: Any) -> int:
        """How big a prepared value is: its tokens for a language model (IPO and NLL average over them)."""
        return 1

    def draws(self, seed: int, item: Any) -> Any:
        """Random draws one factor needs (diffusion: timesteps and noise), from a seed; None if none."""
        return None

    @abstractmethod
    def _score(self, model: nn.Module, items: Sequence[Any], draws: Sequence[Any]) -> torch.Tensor:
        """Scores of a batch of items under `model` (the policy, or the reference)."""

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
            peft_model: Any = self.model  # PEFT's model, whose adapters switch off
            with peft_model.disable_adapter():
                yield self.model
        else:
            raise self.error("reference='cached': its reference scores come from a precomputed cache")

    def _apply(self, fn: Any, recurse: bool = True) -> Backend:
        """`.to()`, `.float()` and friends move the reference copy too."""
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for ref in self._reference_copy:
            ref._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self

    # ------------------------------------------------------------ sampling

    def sample(self, conditions: Sequence[str], generator: torch.Generator, **options: Any) -> list[Any]:
        """One value per conditioning text."""
        raise self.error(f"kind {self.kind!r} cannot sample: it only scores given values")

    def candidates(
        self, condition: str, k: int, strategy: str, generator: torch.Generator, **options: Any
    ) -> list[Any]:
        """Up to k distinct likely values for SysDPO-Sampling. By default, distinct values among k draws
        of `sample` (strategy `sample`); kinds with a search of their own add `beam`."""
        if strategy != "sample":
            raise self.error(
                f"kind {self.kind!r} has no beam search for candidates: use candidate_strategy='sample'"
            )
        return list(dict.fromkeys(self.sample([condition] * k, generator, **options)))


def node_options(node: ir.SampleNode) -> dict[str, Any]:
    """A node's options as its backend gets them: the `.cmp` file's, and its demonstrations (under
    `DEMONSTRATIONS`) when an optimizer gave it some."""
    return {**node.options, DEMONSTRATIONS: node.demos} if node.demos else dict(node.options)


def component_error(component: ir.Component, message: str) -> CompoundError:
    """An error about a component, pointing at its declaration."""
    return error("component", f"component '{component.name}': {message}", component.span)


def load_failed(component: ir.Component, source: str, what: str, cause: Exception) -> CompoundError:
    """Why a component's model could not be loaded, in one line."""
    if isinstance(cause, ImportError):  # the folder is fine; a package its classes need is missing
        return component_error(
            component, f"loading {source} needs a package that is not installed: {needs(cause)}"
        )
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    if not Path(source).is_absolute():
        return component_error(
            component,
            f"no model folder at {component.path!r} (relative to the .cmp file), "
            f"and as a hub id it did not load: {reason}",
        )
    return component_error(component, f"{source} does not hold {what}: {reason}")


def int_option(component: ir.Component, options: Mapping[str, ir.Value], key: str, default: int) -> int:
    """A whole-number option of a component or node (`batch_size=`, `timesteps=`, ...)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise component_error(component, f"{key}= takes a whole number, not {value!r}")
    return value


def number_option(
    component: ir.Component, options: Mapping[str, ir.Value], key: str, default: float
) -> float:
    """A numeric option of a component or node (`guidance_scale=`, ...)."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise component_error(component, f"{key}= takes a number, not {value!r}")
    return float(value)


def _text(value: ir.Value | None) -> str | None:
    """An option's value as text for messages and comparisons (None when absent)."""
    return None if value is None else value if isinstance(value, str) else str(value)
