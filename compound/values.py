"""One node's value in a data row, and what a node reads: the helpers every walk of the graph uses.

A row maps node names to values: text -> str, image -> a PIL image or a file
path, a plate -> a list (one value per member; `image[1]` may also be given on
its own). Computed nodes are always recomputed from their arguments with the
built-in functions, so a row never needs them. Mistakes name the row (a label
such as "chosen row 3" or "prefs.jsonl row 7, chosen"), the node and where the
node is declared. The walk itself is `compound.interpret`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from compound import ir
from compound.backends.fn import FUNCTIONS, Value, fill, render
from compound.diagnostics import CompoundError, error
from compound.limits import DEFAULT, Limits


def row_error(label: str, node: ir.Node, message: str) -> CompoundError:
    """An error about one node of one data row, pointing at the node's declaration."""
    return error("row", f"{label}: '{node.base}' {message}", node.span)


def given(node: ir.Node, row: Mapping[str, Any], label: str, sizes: Mapping[str, int]) -> Any:
    """The value a row gives for `node` (a plate member is taken from the plate's list)."""
    if node.name in row:
        value = row[node.name]
    elif node.base not in row:
        kind = {"input": "an input", "sample": "a sampled node"}.get(node.kind, "a node")
        raise row_error(label, node, f"is missing ({kind} of the system)")
    elif node.index is None:
        value = row[node.base]
    else:
        plate = row[node.base]
        if not isinstance(plate, list | tuple):
            raise row_error(label, node, f"is a plate: give a list of values, not {type(plate).__name__}")
        if len(plate) != sizes[node.base]:
            raise row_error(
                label, node, f"is a plate of {sizes[node.base]}, but the row gives {len(plate)} values"
            )
        value = plate[node.index]
    if node.type == "text" and not isinstance(value, str):
        raise row_error(label, node, f"is text, but the row holds {type(value).__name__}")
    if node.type == "image" and not (isinstance(value, str | Path) or hasattr(value, "convert")):
        raise row_error(
            label, node, f"is an image (a PIL image or a file path), but the row holds {type(value).__name__}"
        )
    return value


def readable(node: ir.Node, value: Any, label: str, limits: Limits = DEFAULT) -> None:
    """Fail unless a value is usable: text within `Limits.text_bytes`; an image given as a path a
    regular file whose header is within `Limits.image_pixels` and whose body decodes."""
    member = f"[{node.index}]" if node.index is not None else ""
    if node.type == "text" and isinstance(value, str) and len(value) > limits.text_bytes // 4:
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > limits.text_bytes:
            raise row_error(label, node, f"{member}is a text of {size:,} bytes (Limits.text_bytes)")
    if node.type != "image" or not isinstance(value, str | Path):
        return
    from PIL import Image, UnidentifiedImageError

    try:
        if Path(value).exists() and not Path(value).is_file():  # a folder, a FIFO or a device would hang
            raise row_error(label, node, f"{member}: the image {value} is not a file")
        with Image.open(value) as image:
            width, height = image.size
            if width * height > limits.image_pixels:
                raise row_error(
                    label, node, f"{member}: the image {value} is {width}x{height} (Limits.image_pixels)"
                )
            image.load()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise row_error(label, node, f"{member}: cannot read the image {value}: {reason}") from None


def arguments(
    node: ir.SampleNode | ir.ComputeNode, values: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
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


def condition(node: ir.SampleNode, values: Mapping[str, Any]) -> str:
    """The text a sampled node is conditioned on: its template filled, or its parents one per line."""
    positional, named = arguments(node, values)
    template = node.options.get("template")
    if isinstance(template, str):
        return fill(template, named)
    return "\n".join(render(v) for v in positional if isinstance(v, str | list))


def compute(node: ir.ComputeNode, values: Mapping[str, Any]) -> Value:
    """A computed node's value, from the built-in function it names."""
    positional, named = arguments(node, values)
    return FUNCTIONS[node.function].apply(positional, named, dict(node.options))


def clashes(system: ir.System, columns: Iterable[str], label: str) -> None:
    """Fail if a column given with the inputs names a node that is not an input: it would read as that
    node's value (its declaration is where the error points)."""
    nodes = {n.name: n for n in system.nodes} | {n.base: n for n in system.nodes}
    for column in columns:
        node = nodes.get(column)
        if node is not None and not isinstance(node, ir.InputNode):
            kind = "sampled" if isinstance(node, ir.SampleNode) else "computed"
            raise row_error(
                label,
                node,
                f"is the {kind} node declared here, and also a column given with the inputs (column "
                f"'{column}'); rename the column: only inputs and columns that name no node go with them",
            )


def missing(system: ir.System, row: Mapping[str, Any]) -> list[ir.SampleNode]:
    """The sampled nodes a row does not give (a plate's members when the plate is absent)."""
    return [
        n for n in system.nodes if isinstance(n, ir.SampleNode) and n.name not in row and n.base not in row
    ]


def check_marginal(system: ir.System, row: Mapping[str, Any], label: str) -> list[ir.SampleNode]:
    """The row's missing nodes, after checking that SysDPO-Sampling can sum over them: text
    intermediates only."""
    gone = missing(system, row)
    outputs = set(system.outputs)
    for node in gone:
        kind = "an output" if node.name in outputs else "an image" if node.type == "image" else None
        if kind:
            raise row_error(
                label, node, f"is missing; it is {kind}, which SysDPO-Sampling cannot sum over: give it"
            )
    return gone


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
