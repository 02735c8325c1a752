"""The built-in deterministic functions: pure, safe, no factor in the likelihood.

A `.cmp` file can name these and nothing else: no code from a file is ever
evaluated. Values are text (`str`) or, for a plate passed whole, a list of text,
which renders as numbered lines. Templates use `{name}` fields (`{{` and `}}`
for literal braces) that name the call's positional arguments; they are
substituted by hand, never through `str.format`, so no attribute lookup or
indexing can run.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compound.backends import TEXT, Signature

Value = str | list[str]


def render(value: Value) -> str:
    """Text as is; a list as numbered lines `1. ...`, `2. ...`."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{k}. {v}" for k, v in enumerate(value, 1))


def template_fields(template: str) -> list[str]:
    """The field names of a template, in order; ValueError if a field is not a plain name."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            shown = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"template field {{{shown}}} is not a plain name such as {{question}}")
        fields.append(name)
    return fields


def fill(template: str, values: Mapping[str, Value]) -> str:
    """Substitute `{name}` fields with rendered values (fields were checked by `template_fields`)."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(render(values[name]))
    return "".join(out)


def line(text: Value, k: int) -> str:
    """Line `k` (from 0) of the text, counting non-blank lines only, stripped; '' past the end."""
    lines = [s.strip() for s in render(text).splitlines() if s.strip()]
    return lines[k] if 0 <= k < len(lines) else ""


def join(*parts: Value, sep: str = "\n") -> str:
    """The parts (lists flattened) joined by `sep`."""
    flat = [p for part in parts for p in ([part] if isinstance(part, str) else part)]
    return sep.join(flat)


@dataclass(frozen=True)
class Function:
    """A built-in function: its signature, and `apply(args, named, options)`.

    `apply` gets the positional argument values (text, lists of text, or the
    plate index, an int), the same values keyed by argument name (what templates
    refer to), and the call's options.
    """

    signature: Signature
    apply: Callable[[Sequence[Any], Mapping[str, Value], Mapping[str, Any]], str]


FUNCTIONS: dict[str, Function] = {
    "line": Function(
        Signature(("text", "int"), "text", options={}),
        lambda args, named, options: line(*args),
    ),
    "join": Function(
        Signature(("text",), "text", variadic=True, options={"sep": TEXT}),
        lambda args, named, options: join(*args, **options),
    ),
    "format": Function(
        Signature(
            ("text",),
            "text",
            variadic=True,
            options={"template": TEXT},
            required=frozenset({"template"}),
        ),
        lambda args, named, options: fill(options["template"], named),
    ),
}
