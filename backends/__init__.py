"""Component backends and the safe function library, installed as `compound.backends`.

A component kind (`causal_lm`, `diffusion`, or one a user adds) is a `Backend`
class registered by name. The front end needs only each kind's `Signature`
(what it reads and produces), so the built-in signatures live here and the
model code is imported only when a system is loaded: `compound check` stays fast
and torch-free. Other packages add kinds through the `compound.backends`
entry-point group; an entry point names a `Backend` subclass, whose `signature`
class attribute the checker reads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

TYPES = ("text", "image")
ENTRY_POINT_GROUP = "compound.backends"


@dataclass(frozen=True)
class Signature:
    """What a call reads and produces: `text... -> text`, `text -> image`, `text, int -> text`.

    `params` are the types of the positional arguments ("text", "image" or
    "int"); with `variadic` the last one repeats, zero or more times. A text
    parameter also takes a whole plate of text (a list, rendered as numbered
    lines). `options` lists the keyword options the call accepts (None: any,
    checked by the backend when it loads), `required` those it must be given.
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


_BUILTIN: dict[str, tuple[Signature, str]] = {
    "causal_lm": (Signature(("text",), "text", variadic=True), "compound.backends.causal_lm:CausalLM"),
    "diffusion": (Signature(("text",), "image"), "compound.backends.diffusion:Diffusion"),
}


@cache
def _plugins() -> dict[str, Any]:
    """Entry points of the `compound.backends` group, by kind name (loaded lazily)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN}


def kinds() -> list[str]:
    """Every component kind: the built-in ones, then those installed packages add."""
    return [*_BUILTIN, *sorted(_plugins())]


def signature(kind: str) -> Signature | None:
    """The signature of a component kind, or None if no such kind exists."""
    if kind in _BUILTIN:
        return _BUILTIN[kind][0]
    if kind in _plugins():
        return backend_class(kind).signature
    return None


def backend_class(kind: str) -> Any:
    """The `Backend` subclass of a kind (imports its module)."""
    if kind in _BUILTIN:
        module, _, name = _BUILTIN[kind][1].partition(":")
        return getattr(importlib.import_module(module), name)
    return _plugins()[kind].load()
