"""Pass 3: check the expanded DAG (cycles, outputs without inputs, unused nodes) and order it.

Runs once every name resolves; networkx does the graph work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import networkx as nx

from compound import ir
from compound.check.declare import Scope, noun
from compound.diagnostics import Note, Report
from compound.parse import ComponentDecl, ConstDecl, ParamDecl


def order(nodes: tuple[ir.Node, ...], outputs: tuple[str, ...], report: Report) -> tuple[ir.Node, ...]:
    """The nodes in topological order (source order among independent ones), after the graph checks."""
    graph = nx.DiGraph()
    position = {n.name: k for k, n in enumerate(nodes)}
    graph.add_nodes_from(position)
    graph.add_edges_from((p, n.name) for n in nodes for p in n.parents)
    by_name = {n.name: n for n in nodes}
    _cycles(graph, by_name, report)
    if report.failed:
        return nodes
    inputs = [n.name for n in nodes if isinstance(n, ir.InputNode)]
    reached = _reach(graph, inputs, graph.successors) - set(inputs)
    for name in outputs:
        if name not in reached:
            report.error(
                "output-no-input",
                f"output '{name}' depends on no input: nothing it is computed from is observed",
                by_name[name].span,
            )
    needed = _reach(graph, outputs, graph.predecessors)
    warned = set()
    for n in nodes:
        if n.name not in needed and n.base not in warned:
            warned.add(n.base)
            report.warn("unused", f"'{n.base}' is not used by any output", name_span(n))
    ordered = nx.lexicographical_topological_sort(graph, key=position.__getitem__)
    return tuple(by_name[name] for name in ordered)


def _reach(graph: nx.DiGraph, sources: Iterable[str], step: Callable[[str], Iterable[str]]) -> set[str]:
    """Every node reachable from any of `sources` (themselves included) along `step`: one pass over
    the graph however many sources there are."""
    seen = set(sources)
    todo = list(seen)
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def unused_declarations(scope: Scope, report: Report) -> None:
    """Warn about components, consts and params that no node uses."""
    for name, decl in scope.decls.items():
        if isinstance(decl, ConstDecl | ParamDecl | ComponentDecl) and name not in scope.used:
            report.warn("unused", f"{noun(decl)} '{name}' is never used", decl.name.span)


def name_span(node: ir.Node) -> ir.Span:
    """Where a node's declaration names it (its span covers the whole statement)."""
    s = node.span
    return s.model_copy(update={"end_line": s.line, "end_column": s.column + len(node.base)})


def _cycles(graph: nx.DiGraph, nodes: dict[str, ir.Node], report: Report) -> None:
    seen = set()
    for component in nx.strongly_connected_components(graph):
        first = next(iter(component))
        if len(component) == 1 and not graph.has_edge(first, first):
            continue
        # find_cycle follows parent -> child edges; reversed, each node depends on the next.
        cycle = [u for u, _ in nx.find_cycle(graph.subgraph(component), source=first)][::-1]
        start = min(range(len(cycle)), key=lambda k: (nodes[cycle[k]].span.line, nodes[cycle[k]].span.column))
        cycle = cycle[start:] + cycle[:start]
        shape = tuple(nodes[n].base for n in cycle)
        if shape in seen:
            continue
        seen.add(shape)
        if len(cycle) == 1:
            message = f"'{cycle[0]}' depends on itself"
        else:
            message = f"cycle: '{cycle[0]}' depends on " + ", which depends on ".join(
                f"'{n}'" for n in [*cycle[1:], cycle[0]]
            )
        notes = [Note(f"'{n}' is declared here", name_span(nodes[n])) for n in cycle[1:]]
        report.error("cycle", message, name_span(nodes[cycle[0]]), notes)
