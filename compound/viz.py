"""Draw a checked system's DAG with Graphviz.

Inputs are parallelograms (observed data), sampled nodes ellipses labelled
with their component (random variables: one factor each), computed nodes
rectangles labelled with their function (deterministic); outputs have a double
border; plates are boxes around their members; params (text parameters) are
notes, with a dotted edge to each node or component use they enter (a
component's: every node it draws). The factorization is the caption.
Rendering needs Graphviz's `dot` binary; without it the `.dot` source is still
written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import graphviz

from compound import ir
from compound.factorize import term

FORMATS = ("svg", "png", "pdf", "dot")
CAPTION_TERMS = 12

_STYLE = {
    "input": {"shape": "parallelogram", "style": "filled", "fillcolor": "#e6e6e6"},
    "sample": {"shape": "ellipse", "style": "filled", "fillcolor": "#dbe9f6"},
    "compute": {"shape": "box", "style": "filled", "fillcolor": "#fdf1d6"},
    "param": {"shape": "note", "style": "filled", "fillcolor": "#eaf6e3", "fontsize": "10"},
}
#: Characters of a param's text shown in its note.
PARAM_TEXT = 40
INSTALL_HINT = (
    "install Graphviz to render it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
    "conda: conda install graphviz)"
)


class GraphvizMissing(RuntimeError):
    """`dot` is not installed; the `.dot` source was written to `dot_path` instead."""

    def __init__(self, dot_path: Path):
        self.dot_path = dot_path
        super().__init__(f"Graphviz's 'dot' was not found: wrote {dot_path} instead; {INSTALL_HINT}")


def draw(system: ir.System) -> graphviz.Digraph:
    graph = graphviz.Digraph(
        system.name,
        graph_attr={
            "rankdir": "TB",
            "ordering": "out",
            "fontname": "Helvetica",
            "labelloc": "b",
            "labeljust": "l",
        },
        node_attr={"fontname": "Helvetica"},
        edge_attr={"color": "#555555"},
    )
    outputs = set(system.outputs)
    in_plate = {name: plate for plate in system.plates for name in plate.nodes}
    clusters = {
        p.name: graphviz.Digraph(
            f"cluster_{p.name}",
            graph_attr={"label": f"{p.name} [{p.size}]", "style": "rounded,dashed", "labeljust": "r"},
        )
        for p in system.plates
    }
    for node in system.nodes:
        label = node.name
        if isinstance(node, ir.SampleNode):
            label += f"\\n~ {node.component}"
        elif isinstance(node, ir.ComputeNode):
            label += f"\\n= {node.function}"
        attrs = dict(_STYLE[node.kind], peripheries="2" if node.name in outputs else "1")
        target = clusters[in_plate[node.name].name] if node.name in in_plate else graph
        target.node(node.name, label, **attrs)
    for plate in system.plates:
        cluster = clusters[plate.name]
        members = set(plate.nodes)
        if not any(members.intersection(system.node(n).parents) for n in plate.nodes):
            # Keep independent members side by side in index order (dot reverses clusters).
            row = graphviz.Digraph(graph_attr={"rank": "same"})
            for a, b in zip(plate.nodes, plate.nodes[1:], strict=False):
                row.edge(a, b, style="invis")
            cluster.subgraph(row)
        graph.subgraph(cluster)
    for node in system.nodes:
        for parent in node.parents:
            graph.edge(parent, node.name)
    for param in system.params:
        text = param.value if len(param.value) <= PARAM_TEXT else param.value[: PARAM_TEXT - 1] + "…"
        shown = text.replace("\\", "\\\\").replace("\n", "\\n")
        graph.node(f"{param.name} (param)", f'{param.name}\\n"{shown}"', **_STYLE["param"])
        for use in param.uses:
            targets = [
                n.name
                for n in system.nodes
                if (use.kind == "node" and n.base == use.owner)
                or (use.kind == "component" and isinstance(n, ir.SampleNode) and n.component == use.owner)
            ]
            for target in targets:
                graph.edge(f"{param.name} (param)", target, style="dotted", label=use.option, fontsize="9")
    graph.attr(label=caption(system))
    return graph


def caption(system: ir.System) -> str:
    """The factorization, one term per line (Graphviz `\\l` ends a left-aligned line)."""
    terms = [term(f) for f in system.factors[:CAPTION_TERMS]]
    if len(system.factors) > CAPTION_TERMS:
        terms.append(f"... ({len(system.factors) - CAPTION_TERMS} more factors)")
    lines = ["log p(s|x) = " + (terms[0] if terms else "0")] + [f"      + {t}" for t in terms[1:]]
    return "".join(line + "\\l" for line in lines)


def render(system: ir.System, out: str | Path) -> Path:
    """Write the drawing to `out` (.svg, .png, .pdf or .dot); raise `GraphvizMissing` without `dot`."""
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw to '{out}': use one of {', '.join('.' + f for f in FORMATS)}")
    graph = draw(system)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(graph.source, encoding="utf-8")
        return out
    if shutil.which("dot") is None:
        dot_path = out.with_suffix(".dot")
        dot_path.write_text(graph.source, encoding="utf-8")
        raise GraphvizMissing(dot_path)
    out.write_bytes(graph.pipe(format=fmt))
    return out
