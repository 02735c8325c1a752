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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from compound import ir
from compound.choices import Reference, values
from compound.diagnostics import error

TYPES = ("text", "image")
REFERENCES = values(Reference)
ENTRY_POINT_GROUP = "compound.backends"
#: Options every sampled node takes, whatever its component's kind: handled by the core.
NODE_OPTIONS = frozenset({"template", "weight", "beta"})
#: Options every component takes, whatever its kind: handled by the core (`beta=`: its nodes' beta).
COMPONENT_OPTIONS = frozenset({"beta"})
#: What the core hands a backend with a node's demonstrations (`SampleNode.demos`), among the options of
#: `prepare` and `sample`: never an option a `.cmp` file gives (a node's `demos=K` says how many it takes).
DEMONSTRATIONS = "demonstrations"
#: Options that would let a `.cmp` file run code: a file may never give them (the caller may, in Python or
#: on the command line).
FORBIDDEN = frozenset({"trust_remote_code"})


@dataclass(frozen=True)
class Option:
    """What one option takes, checked by `compound check` before anything loads.

    `type` is "int" (a whole number), "number", "bool", "text", "regex" (a
    regular expression, compiled when checked) or "call" (such as `lora(r=8)`,
    whose own options are `fields`); numbers lie in `[low, high]` (`above`: low
    excluded); text may be limited to `choices`.
    """

    type: str
    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()
    fields: Mapping[str, Option] | None = None

    def __str__(self) -> str:
        if self.type in ("int", "number"):
            noun = "a whole number" if self.type == "int" else "a number"
            low, high = _shown(self.low), _shown(self.high)
            if self.low is not None and self.high is not None and not self.above:
                return f"{noun} from {low} to {high}"
            bounds = [f"above {low}" if self.above else f"of at least {low}"] if self.low is not None else []
            bounds += [f"up to {high}"] if self.high is not None else []
            return " ".join([noun, *bounds])
        if self.type == "call":
            return f"a call such as lora({', '.join(f'{k}=' for k in self.fields or {})})"
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        return {"bool": "true or false", "text": "a string", "regex": "a regular expression"}[self.type]

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this option (None: nothing)."""
        if self.type == "call":
            return self._call(value)
        if self.type == "bool":
            return None if isinstance(value, bool) else f"takes {self}"
        if self.type in ("text", "regex"):
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                return f"takes {self}"
            return _regex_problem(value) if self.type == "regex" else None
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not (whole if self.type == "int" else whole or isinstance(value, float)):
            return f"takes {self}"
        low_ok = self.low is None or (value > self.low if self.above else value >= self.low)
        if not low_ok or (self.high is not None and value > self.high):
            return f"takes {self}"
        return None

    def _call(self, value: Any) -> str | None:
        if not isinstance(value, ir.Call) or value.args:
            return f"takes {self}"
        fields = self.fields or {}
        for key, given in value.options.items():
            if key not in fields:
                return f"has no option {key!r} (options: {', '.join(fields)})"
            wrong = fields[key].problem(given)
            if wrong:
                return f"{key}= {wrong}, not {given!r}"
        return None


def _shown(bound: float | None) -> str:
    return "" if bound is None else f"{bound:,}" if float(bound).is_integer() else f"{bound:g}"


def _regex_problem(pattern: str) -> str | None:
    import regex

    try:
        regex.compile(pattern)
    except regex.error as e:
        return f"is not a valid regular expression: {e}"
    return None


@dataclass(frozen=True)
class Signature:
    """What a call reads and produces: `text... -> text`, `text -> image`, `text, int -> text`.

    `params` are the types of the positional arguments ("text", "image" or
    "int"); with `variadic` the last one repeats, zero or more times. A text
    parameter also takes a whole plate of text (a list, rendered as numbered
    lines). `options` are the keyword options the call accepts (None: any),
    `required` those it must be given.
    """

    params: tuple[str, ...]
    output: str
    variadic: bool = False
    options: Mapping[str, Option] | None = None
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
    any, left to the backend to check when it loads), each with what it takes;
    `sampling` the options its `sample` takes (a node's or the component's, or
    decoding flags); `implementation` where its `Backend` class is (`module:Class`).
    """

    name: str
    signature: Signature
    component_options: Mapping[str, Option] | None = None
    node_options: Mapping[str, Option] | None = None
    sampling: frozenset[str] = frozenset()
    implementation: str = ""


TEXT = Option("text")
FLAG = Option("bool")
COUNT = Option("int", 1, 65_536)  # batch sizes and the like


def _range(low: float, high: float, whole: bool = True, above: bool = False) -> Option:
    return Option("int" if whole else "number", low, high, above)


_LM_SAMPLING: dict[str, Option] = {
    "pattern": Option("regex"),
    "choice": TEXT,
    "diversity": _range(0, 1e6, whole=False),
    "max_new_tokens": _range(1, 1_000_000),
    "min_new_tokens": _range(0, 1_000_000),
    "do_sample": FLAG,
    "temperature": _range(0, 1e6, whole=False, above=True),
    "top_k": _range(0, 1_000_000_000),
    "top_p": _range(0, 1, whole=False, above=True),
    "num_beams": _range(1, 1024),
    "repetition_penalty": _range(0, 1e6, whole=False, above=True),
    "eos_token_id": _range(0, 1_000_000_000),
}
_DIFFUSION_SAMPLING: dict[str, Option] = {
    "steps": _range(1, 10_000),
    "guidance_scale": _range(0, 1e6, whole=False),
}
_LORA = Option(
    "call",
    fields={
        "r": _range(1, 1024),
        "alpha": _range(0, 1e6, whole=False, above=True),
        "dropout": Option("number", 0, 1),
        "target_modules": TEXT,
    },
)
_LOADING: dict[str, Option] = {
    "lora": _LORA,
    "gradient_checkpointing": FLAG,
    "reference": Option("text", choices=REFERENCES),
    "batch_size": COUNT,
    "dtype": Option("text", choices=("float32", "bfloat16", "float16")),
}
#: Draws of (t, noise) per image in the diffusion surrogate.
_TIMESTEPS = {"timesteps": _range(1, 1000)}
#: The side of the images a diffusion model paints, and its T5 prompt length (SD3, Flux).
_GEOMETRY = {"resolution": _range(8, 16_384), "max_sequence_length": _range(1, 4096)}

BUILTIN: dict[str, Kind] = {
    "causal_lm": Kind(
        "causal_lm",
        Signature(("text",), "text", variadic=True),
        component_options={
            **_LOADING,
            **_LM_SAMPLING,
            "max_length": _range(1, 100_000_000),
            "gguf_file": TEXT,
            "chat": FLAG,
            "system_prompt": TEXT,
        },
        node_options={**_LM_SAMPLING, "demos": _range(1, 64)},
        sampling=frozenset({*_LM_SAMPLING, DEMONSTRATIONS}),
        implementation="compound.backends.causal_lm:CausalLM",
    ),
    "diffusion": Kind(
        "diffusion",
        Signature(("text",), "image"),
        component_options={**_LOADING, **_DIFFUSION_SAMPLING, **_TIMESTEPS, **_GEOMETRY},
        node_options={**_DIFFUSION_SAMPLING, **_TIMESTEPS},
        sampling=frozenset(_DIFFUSION_SAMPLING),
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
