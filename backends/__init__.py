"""Component backends and the safe function library, installed as `compound.backends`.

The front end needs only what each component kind and function reads and
produces (its `Signature`), so signatures live here without importing any
model code: `compound check` stays fast and torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES = ("text", "image")


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


KINDS: dict[str, Signature] = {
    "causal_lm": Signature(("text",), "text", variadic=True),
    "diffusion": Signature(("text",), "image"),
}
