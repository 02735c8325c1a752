"""Component kinds: what the checker knows of each (`Kind`), and where its `Backend` lives.

A component kind (`causal_lm`, `diffusion`, or one a package adds) is a
`Backend` class (`compound.backends.base`) whose `spec` is a `Kind`: the call's
signature and the options a component and a node may give. Everything the
front end reads about a kind is that one `Kind`, declared once. The built-in
kinds' specs live in the table below, torch-free, so that `compound check`
never imports a model library; their backend classes take their `spec` from it.
Other packages add kinds through the `compound.backends` entry-point group: an
entry point names a `Backend` subclass, whose `spec` the checker reads (which
imports it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from compound.diagnostics import error

TYPES = ("text", "image")
ENTRY_POINT_GROUP = "compound.backends"
#: Options every sampled node takes, whatever its component's kind: handled by the core.
NODE_OPTIONS = frozenset({"template", "weight"})


@dataclass(frozen=True)
class Signature:
    """What a call reads and produces: `text... -> text`, `text -> image`, `text, int -> text`.

    `params` are the types of the positional arguments ("text", "image" or
    "int"); with `variadic` the last one repeats, zero or more times. A text
    parameter also takes a whole plate of text (a list, rendered as numbered
    lines). `options` lists the keyword options the call accepts (None: any),
    `required` those it must be given.
    """

    params: tuple[str, ...]
    output: str
    variadic: bool = False
    options: frozenset[str] | None = None
    required: frozenset[str] = frozenset()

    def __str__(self) -> str:
        params = list(self.params)
        if self.variadic:
            params[-1] += "..."
        return f"{', '.join(params) or '()'} -> {self.output}"

    def accepts(self, count: int) -> bool:
        """Whether `count` positional arguments fit."""
        if self.variadic:
            return count >= len(self.params) - 1
        return count == len(self.params)

    def param(self, position: int) -> str:
        return self.params[min(position, len(self.params) - 1)]


@dataclass(frozen=True)
class Kind:
    """A component kind as the checker and the run time see it.

    `signature` is what a node calling the component reads and produces;
    `component_options` the options its declaration may give, `node_options`
    those a node calling it may give besides `template=` and `weight=` (None:
    any, left to the backend to check when it loads); `sampling` the options its
    `sample` takes (a node's or the component's, or decoding flags);
    `implementation` where its `Backend` class is (`module:Class`).
    """

    name: str
    signature: Signature
    component_options: frozenset[str] | None = None
    node_options: frozenset[str] | None = None
    sampling: frozenset[str] = frozenset()
    implementation: str = ""


_LM_SAMPLING = frozenset(
    {
        "pattern",
        "choice",
        "diversity",
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "num_beams",
        "repetition_penalty",
        "eos_token_id",
    }
)
_DIFFUSION_SAMPLING = frozenset({"steps", "guidance_scale"})
_LOADING = frozenset({"lora", "reference", "batch_size", "dtype"})

BUILTIN: dict[str, Kind] = {
    "causal_lm": Kind(
        "causal_lm",
        Signature(("text",), "text", variadic=True),
        component_options=_LOADING
        | _LM_SAMPLING
        | {"max_length", "trust_remote_code", "gguf_file", "chat", "system"},
        node_options=_LM_SAMPLING,
        sampling=_LM_SAMPLING,
        implementation="compound.backends.causal_lm:CausalLM",
    ),
    "diffusion": Kind(
        "diffusion",
        Signature(("text",), "image"),
        component_options=_LOADING | _DIFFUSION_SAMPLING | {"timesteps"},
        node_options=_DIFFUSION_SAMPLING | {"timesteps"},
        sampling=_DIFFUSION_SAMPLING,
        implementation="compound.backends.diffusion:Diffusion",
    ),
}


@cache
def _plugins() -> dict[str, Any]:
    """Entry points of the `compound.backends` group, by kind name (loaded lazily)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def kinds() -> list[str]:
    """Every component kind: the built-in ones, then those installed packages add."""
    return [*BUILTIN, *sorted(_plugins())]


def kind(name: str) -> Kind | None:
    """The spec of a component kind, or None if no such kind exists."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name in _plugins():
        spec = getattr(backend_class(name), "spec", None)
        if not isinstance(spec, Kind):
            raise error("unknown-kind", f"the plugin backend of kind {name!r} declares no `spec = Kind(...)`")
        return spec
    return None


def signature(name: str) -> Signature | None:
    """The signature of a component kind, or None if no such kind exists."""
    spec = kind(name)
    return spec.signature if spec is not None else None


def backend_class(name: str) -> Any:
    """The `Backend` subclass of a kind (imports its module)."""
    if name in BUILTIN:
        module, _, cls = BUILTIN[name].implementation.partition(":")
        return getattr(importlib.import_module(module), cls)
    return _plugins()[name].load()
