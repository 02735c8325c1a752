"""`compound.load`: compile a `.cmp` file and load its components, optionally with trained weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compound import ir
from compound.backends import backend_class
from compound.compiler import compile_file
from compound.diagnostics import error
from compound.io import CHECKSUMS, damaged
from compound.limits import DEFAULT, Limits
from compound.system import CompiledSystem
from compound.text import TEXT_FILE, Text
from compound.text import read as read_text


def load(
    path: str | Path,
    weights: str | Path | None = None,
    reference: str | Mapping[str, str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    trust_remote_code: bool = False,
    limits: Limits = DEFAULT,
    text: Text | None = None,
) -> CompiledSystem:
    """Compile a `.cmp` file and load its components with `from_pretrained`; `text` (params' values and
    demonstrations, `compound.text`) replaces the file's and the weights folder's.

    Model folders are relative to the `.cmp` file. `weights` is a folder written
    by `save_pretrained` (one subfolder per component; components without one
    keep their base weights); the reference of every component stays the base
    model the `.cmp` file names, whatever the strategy, so a reloaded system's
    log ratios are those of the trained one. `reference` overrides the reference
    strategy (`copy`, `adapter`, `cached`), for every component or per component
    name. `options` adds or overrides component options, per component name: a
    dict value becomes a call, so `{"writer": {"lora": {"r": 8}}}` means `lora(r=8)`.
    `trust_remote_code` lets model folders run their own Python code (transformers'
    `auto_map`): off unless the caller turns it on; a `.cmp` file cannot. Weights
    load from safetensors files only.
    """
    path = Path(path)
    system = compile_file(path, limits)
    if weights is not None:
        _check_weights(Path(weights))
    components = {}
    for component in system.components:
        extra = (options or {}).get(component.name, {})
        if extra:
            merged = {**component.options, **{k: _value(k, v) for k, v in extra.items()}}
            component = component.model_copy(update={"options": merged})
        strategy = reference.get(component.name) if isinstance(reference, Mapping) else reference
        backend = backend_class(component.kind).load(
            component, path.parent, reference=strategy, trust_remote_code=trust_remote_code
        )
        components[component.name] = backend
    loaded = CompiledSystem(system, components)
    if weights is not None:
        load_weights(loaded, weights)
    if text is not None:
        loaded.set_text(text)
    return loaded


def lora_options(lora: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-component LoRA settings (`{"writer": {"r": 8}}`) as `load`'s component options."""
    return {name: {"lora": dict(spec)} for name, spec in lora.items()}


def load_weights(system: CompiledSystem, weights: str | Path) -> None:
    """Put trained weights (a folder written by `save_pretrained`: one subfolder per component) into the
    system's policy; components without a subfolder keep theirs, and every reference stays as it is. A
    `text.json` in the folder (`compound.text`) sets the params and demonstrations trained with them."""
    trained = Path(weights)
    _check_weights(trained)
    for name, backend in system.backends.items():
        if (trained / name).is_dir():
            backend.load_weights(trained / name)
    if (trained / TEXT_FILE).is_file():  # the params and demonstrations the run optimized with them
        system.set_text(read_text(trained / TEXT_FILE))


def _check_weights(trained: Path) -> None:
    if not trained.is_dir():
        raise error("component", f"no trained weights at {trained}")
    if (trained / CHECKSUMS).is_file() and (problem := damaged(trained)):
        raise error("component", f"the trained weights in {trained} are damaged: {problem}")


def _value(name: str, value: Any) -> ir.Value:
    return ir.Call(name=name, options=dict(value)) if isinstance(value, Mapping) else value
