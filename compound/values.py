"""A data row's node values: inputs and sampled nodes read from the row, computed nodes evaluated.

A row maps node names to values: text -> str, image -> a PIL image or a file
path, a plate -> a list (one value per member; `image[1]` may also be given on
its own). Computed nodes are always recomputed from their arguments with the
built-in functions, so a row never needs them. Mistakes name the row, the node
and where the node is declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compound import ir
from compound.backends.fn import FUNCTIONS, Value, fill, render
from compound.diagnostics import CompoundError, Diagnostic


def row_error(row: int, node: ir.Node, message: str, what: str = "row") -> CompoundError:
    """An error about one node of one data row, pointing at the node's declaration."""
    return CompoundError([Diagnostic("error", "row", f"{what} {row}: '{node.base}' {message}", node.span)])


def given(
    node: ir.Node, row: Mapping[str, Any], index: int, sizes: Mapping[str, int], what: str = "row"
) -> Any:
    """The value a row gives for `node` (a plate member is taken from the plate's list)."""
    if node.name in row:
        value = row[node.name]
    elif node.base not in row:
        kind = {"input": "an input", "sample": "a sampled node"}.get(node.kind, "a node")
        raise row_error(index, node, f"is missing ({kind} of the system)", what)
    elif node.index is None:
        value = row[node.base]
    else:
        plate = row[node.base]
        if not isinstance(plate, list | tuple):
            raise row_error(
                index, node, f"is a plate: give a list of values, not {type(plate).__name__}", what
            )
        size = sizes[node.base]
        if len(plate) != size:
            raise row_error(index, node, f"is a plate of {size}, but the row gives {len(plate)} values", what)
        value = plate[node.index]
    check_type(node, value, index, what)
    return value


def check_type(node: ir.Node, value: Any, index: int, what: str = "row") -> None:
    if node.type == "text" and not isinstance(value, str):
        raise row_error(index, node, f"is text, but the row holds {type(value).__name__}", what)
    if node.type == "image" and not (isinstance(value, str | Path) or hasattr(value, "convert")):
        raise row_error(
            index,
            node,
            f"is an image (a PIL image or a file path), but the row holds {type(value).__name__}",
            what,
        )


def arguments(node: ir.Node, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A node's argument values: positionally, and by argument name (for templates)."""
    positional: list[Any] = []
    named: dict[str, Any] = {}
    for arg in node.args:
        if arg.nodes:
            value: Any = [values[n] for n in arg.nodes] if arg.whole else values[arg.nodes[0]]
        else:
            value = arg.value
        positional.append(value)
        if arg.name is not None:
            named[arg.name] = value if not isinstance(value, int) else str(value)
    return positional, named


def condition(node: ir.Node, values: Mapping[str, Any]) -> str:
    """The text a sampled node is conditioned on: its template filled, or its parents one per line."""
    positional, named = arguments(node, values)
    template = node.options.get("template")
    if isinstance(template, str):
        return fill(template, named)
    return "\n".join(render(v) for v in positional if isinstance(v, str | list))


def compute(node: ir.Node, values: Mapping[str, Any]) -> Value:
    """A computed node's value, from the built-in function it names."""
    positional, named = arguments(node, values)
    assert node.function is not None
    return FUNCTIONS[node.function].apply(positional, named, dict(node.options))


def evaluate(system: ir.System, row: Mapping[str, Any], index: int, what: str = "row") -> dict[str, Any]:
    """Every node's value for one complete row (inputs and sampled nodes given), in topological order."""
    sizes = plate_sizes(system)
    values: dict[str, Any] = {}
    for node in system.nodes:
        values[node.name] = (
            compute(node, values) if node.kind == "compute" else given(node, row, index, sizes, what)
        )
    return values


def plate_sizes(system: ir.System) -> dict[str, int]:
    return {plate.name: plate.size for plate in system.plates}


def as_row(system: ir.System, values: Mapping[str, Any]) -> dict[str, Any]:
    """Node values back in the row format: one key per declaration, plates as lists."""
    row: dict[str, Any] = {}
    for node in system.nodes:
        if node.index is None:
            row[node.base] = values[node.name]
        else:
            row.setdefault(node.base, []).append(values[node.name])
    return row
