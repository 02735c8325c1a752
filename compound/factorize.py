"""Factorize a checked system's likelihood over its DAG (docs/method.md, "The factorization").

    log p(s|x) = sum over sampled nodes v of  log p_component(v) (v | parents(v))

Inputs are observed and computed nodes are deterministic, so neither has a
factor. The factors come in topological order, one per plate member. A factor
also says which params (text parameters) its conditioning reads: those of its
node's options, of its component's, and of the computed nodes its node reads
through other computed nodes; `p_writer(plan | request; instruction)`.
"""

from __future__ import annotations

from compound import ir


def factorize(system: ir.System) -> ir.System:
    """The system with its factors filled in."""
    components = {c.name: c for c in system.components}
    nodes = {n.name: n for n in system.nodes}
    factors = tuple(
        ir.Factor(
            node=n.name,
            component=n.component,
            parents=n.parents,
            weight=_number(n.options.get("weight", 1.0)),
            beta=_beta(n.options.get("beta", components[n.component].options.get("beta"))),
            params=_params(system, nodes, n) if system.params else (),
        )
        for n in system.nodes
        if isinstance(n, ir.SampleNode)
    )
    return system.model_copy(update={"factors": factors})


def _params(system: ir.System, nodes: dict[str, ir.Node], node: ir.SampleNode) -> tuple[str, ...]:
    """The params a sampled node's factor reads: its own options', its component's, and those of the
    computed nodes between it and the sampled nodes and inputs it reads."""
    owners = {("component", node.component), ("node", node.base)}
    todo = list(node.parents)
    while todo:
        parent = nodes[todo.pop()]
        if isinstance(parent, ir.ComputeNode) and ("node", parent.base) not in owners:
            owners.add(("node", parent.base))
            todo += parent.parents
    return tuple(p.name for p in system.params if any((u.kind, u.owner) in owners for u in p.uses))


def _number(value: ir.Value) -> float:
    """A `weight=` or `beta=` (the checker made sure it is a positive number)."""
    assert isinstance(value, int | float)
    return float(value)


def _beta(value: ir.Value | None) -> float | None:
    return None if value is None else _number(value)


def term(factor: ir.Factor) -> str:
    """`log p_writer(plan | request)`, with the weight when it is not 1."""
    given = f" | {', '.join(factor.parents)}" if factor.parents else ""
    params = f"; {', '.join(factor.params)}" if factor.params else ""
    weight = f"{factor.weight:g} * " if factor.weight != 1.0 else ""
    return f"{weight}log p_{factor.component}({factor.node}{given}{params})"


def formula(system: ir.System) -> str:
    """`log p(s|x) = log p_writer(plan | request) + log p_painter(image[0] | scene[0]) + ...`."""
    terms = " + ".join(term(f) for f in system.factors) or "0 (no sampled nodes)"
    return f"log p(s|x) = {terms}"
