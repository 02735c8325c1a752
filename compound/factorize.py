"""Factorize a checked system's likelihood over its DAG (docs/method.md, "The factorization").

    log p(s|x) = sum over sampled nodes v of  log p_component(v) (v | parents(v))

Inputs are observed and computed nodes are deterministic, so neither has a
factor. The factors come in topological order, one per plate member.
"""

from __future__ import annotations

from compound import ir


def factorize(system: ir.System) -> ir.System:
    """The system with its factors filled in."""
    components = {c.name: c for c in system.components}
    factors = tuple(
        ir.Factor(
            node=n.name,
            component=n.component,
            parents=n.parents,
            weight=_number(n.options.get("weight", 1.0)),
            beta=_beta(n.options.get("beta", components[n.component].options.get("beta"))),
        )
        for n in system.nodes
        if isinstance(n, ir.SampleNode)
    )
    return system.model_copy(update={"factors": factors})


def _number(value: ir.Value) -> float:
    """A `weight=` or `beta=` (the checker made sure it is a positive number)."""
    assert isinstance(value, int | float)
    return float(value)


def _beta(value: ir.Value | None) -> float | None:
    return None if value is None else _number(value)


def term(factor: ir.Factor) -> str:
    """`log p_writer(plan | request)`, with the weight when it is not 1."""
    given = f" | {', '.join(factor.parents)}" if factor.parents else ""
    weight = f"{factor.weight:g} * " if factor.weight != 1.0 else ""
    return f"{weight}log p_{factor.component}({factor.node}{given})"


def formula(system: ir.System) -> str:
    """`log p(s|x) = log p_writer(plan | request) + log p_painter(image[0] | scene[0]) + ...`."""
    terms = " + ".join(term(f) for f in system.factors) or "0 (no sampled nodes)"
    return f"log p(s|x) = {terms}"
