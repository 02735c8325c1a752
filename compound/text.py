"""A system's text parameters as data: its params' values and its nodes' demonstrations, in its IR.

A `.cmp` file declares params (`param instruction = "..."`) and gives nodes
room for demonstrations (`demos=4`); an optimizer (`compound.optimize`)
changes their text. `Text` holds one choice of it: each param's value, and the
demonstrations of each node declaration (a plate's members share them).
`bind` puts it into a checked system (each param's value at each of its uses,
each node's `demos`), refusing text that does not fit (a template naming a
field its node does not have, more demonstrations than `demos=` allows, a param
the system does not declare). `TEXT_FILE` beside trained weights
(`RUN/final/text.json`) holds it, so that `compound.load(cmp, weights=RUN/final)`
loads the weights and the text together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compound import ir
from compound.backends.fn import template_fields
from compound.diagnostics import error
from compound.io import write_json
from compound.run_folder import read_object

#: Where a run keeps its text, beside the weights it trained (`RUN/final/text.json`).
TEXT_FILE = "text.json"


@dataclass(frozen=True)
class Text:
    """Params' values by name, and demonstrations by node declaration."""

    params: dict[str, str] = field(default_factory=dict)
    demos: dict[str, tuple[ir.Demo, ...]] = field(default_factory=dict)

    def key(self) -> str:
        """A stable text of the whole choice (what caches and seeds are keyed by)."""
        import json

        shown = {
            "params": dict(sorted(self.params.items())),
            "demos": {k: [[d.prompt, d.output] for d in v] for k, v in sorted(self.demos.items())},
        }
        return json.dumps(shown, sort_keys=True, ensure_ascii=False)

    def to_json(self) -> dict[str, Any]:
        demos = {k: [d.model_dump() for d in v] for k, v in self.demos.items()}
        return {"params": dict(self.params), "demos": demos}


def seed(system: ir.System) -> Text:
    """The text the `.cmp` file gives: each param's declared value, no demonstrations."""
    return Text({p.name: p.value for p in system.params})


def current(system: ir.System) -> Text:
    """The text bound into `system` now."""
    demos = {n.base: n.demos for n in system.nodes if isinstance(n, ir.SampleNode) and n.demos}
    return Text({p.name: p.value for p in system.params}, demos)


def room(system: ir.System) -> dict[str, int]:
    """The demonstrations each node declaration takes (its `demos=K`), by declaration name."""
    declared = ((n.base, n.options.get("demos")) for n in system.nodes if isinstance(n, ir.SampleNode))
    return {base: k for base, k in declared if isinstance(k, int) and not isinstance(k, bool)}


def bind(system: ir.System, text: Text) -> ir.System:
    """`system` with `text`: params not in `text` keep their current value, nodes not in `text.demos`
    their demonstrations."""
    params = {p.name: p for p in system.params}
    unknown = sorted(set(text.params) - set(params))
    if unknown:
        known = ", ".join(params) or "none"
        raise error("config", f"{system.file} declares no param {', '.join(unknown)} (params: {known})")
    limits = room(system)
    for base, demos in text.demos.items():
        if base not in limits:
            raise error("config", f"'{base}' takes no demonstrations: give it demos=K in {system.file}")
        if len(demos) > limits[base]:
            most = limits[base]
            raise error("config", f"'{base}' takes {most} demonstrations (demos={most}), not {len(demos)}")
    values = {name: text.params.get(name, p.value) for name, p in params.items()}
    node_options: dict[str, dict[str, str]] = {}
    component_options: dict[str, dict[str, str]] = {}
    for name, p in params.items():
        for use in p.uses:
            target = node_options if use.kind == "node" else component_options
            target.setdefault(use.owner, {})[use.option] = values[name]
    nodes = [_node(system, n, node_options.get(n.base, {}), text.demos) for n in system.nodes]
    components = [
        c.model_copy(update={"options": {**c.options, **component_options.get(c.name, {})}})
        for c in system.components
    ]
    bound = tuple(p.model_copy(update={"value": values[p.name]}) for p in system.params)
    return system.model_copy(update={"params": bound, "nodes": tuple(nodes), "components": tuple(components)})


def _node(
    system: ir.System, node: ir.Node, options: Mapping[str, str], demos: Mapping[str, Sequence[ir.Demo]]
) -> ir.Node:
    if isinstance(node, ir.InputNode) or (not options and node.base not in demos):
        return node
    merged = {**node.options, **options}
    template = options.get("template")
    if template is not None and isinstance(node, ir.SampleNode | ir.ComputeNode):
        try:
            fields = template_fields(template)
        except ValueError as e:
            raise error("config", f"the template of '{node.base}': {e}", node.span) from None
        names = {a.name for a in node.args if a.name is not None}
        strange = [f for f in fields if f not in names]
        if strange:
            raise error(
                "config",
                f"the template of '{node.base}' names {{{strange[0]}}}, which is not one of its arguments "
                f"({', '.join(sorted(names)) or 'none'})",
                node.span,
            )
    update: dict[str, Any] = {"options": merged}
    if isinstance(node, ir.SampleNode) and node.base in demos:
        update["demos"] = tuple(demos[node.base])
    return node.model_copy(update=update)


def read(path: str | Path) -> Text:
    """A `text.json` file, checked."""
    found = read_object(Path(path), "the text file")
    params, demos = found.get("params", {}), found.get("demos", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise error("config", f"{path}: params is a table of texts")
    if not isinstance(demos, dict) or not all(isinstance(v, list) for v in demos.values()):
        raise error("config", f"{path}: demos is a table of lists of demonstrations")
    shots: dict[str, tuple[ir.Demo, ...]] = {}
    for base, items in demos.items():
        try:
            shots[base] = tuple(ir.Demo.model_validate(d, strict=True) for d in items)
        except ValueError:
            raise error("config", f"{path}: a demonstration of '{base}' is not {{prompt, output}}") from None
    return Text(dict(params), shots)


def write(path: str | Path, text: Text) -> Path:
    """`text` as a `text.json` file, atomically."""
    return write_json(path, text.to_json())
