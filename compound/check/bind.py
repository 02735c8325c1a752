"""Resolve a call's positional arguments once per declaration, then expand them per plate member.

An argument is bound once for its declaration (`Binding`), so that a mistake
inside a plate is reported once, not once per member; `Binding.arg(k)` is the
argument as plate member k sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal as TypingLiteral

from compound import ir
from compound.check.declare import INDEX, Scope, describe, expanded
from compound.diagnostics import Note, Report
from compound.parse import CallExpr, ConstDecl, Expr, InputDecl, Literal, Name, NodeDecl, ParamDecl, Ref

Mode = TypingLiteral["single", "whole", "matching", "fixed", "index", "literal"]


@dataclass(frozen=True)
class Binding:
    """A positional argument, resolved once for its declaration."""

    mode: Mode
    type: str
    span: ir.Span
    name: str | None = None
    nodes: tuple[str, ...] = ()
    value: int | None = None

    def arg(self, k: int | None) -> ir.Arg:
        """The argument as seen by plate member `k` (None outside plates)."""
        if self.mode == "whole":
            return ir.Arg(name=self.name, nodes=self.nodes, whole=True)
        if self.mode == "matching":
            return ir.Arg(name=self.name, nodes=(self.nodes[k or 0],))
        if self.mode == "index":
            return ir.Arg(name=INDEX, value=k)
        if self.mode == "literal":
            return ir.Arg(value=self.value)
        return ir.Arg(name=self.name, nodes=self.nodes)


def bind(expr: Expr, size: int | None, scope: Scope, report: Report) -> Binding | None:
    """Resolve one positional argument of a declaration whose plate size is `size`."""
    if isinstance(expr, CallExpr):
        report.error(
            "nested-call", "a call cannot be an argument: declare it as a node of its own", expr.span
        )
        return None
    if isinstance(expr, Literal):
        if isinstance(expr.value, int) and not isinstance(expr.value, bool):
            return Binding("literal", "int", expr.span, value=expr.value)
        report.error(
            "positional-literal",
            'positional arguments are nodes; put fixed text in template="..."',
            expr.span,
        )
        return None
    ref, text = expr, expr.name.text
    if text == INDEX and ref.index is None:
        if size is None:
            report.error(
                "plate-index",
                f"'{INDEX}' is the plate index: it exists only in a plate declaration such as 'x[3] : ...'",
                ref.span,
            )
            return None
        return Binding("index", "int", ref.span, name=INDEX)
    decl = scope.resolve(ref.name, report)
    if decl is None:
        return None
    if not isinstance(decl, InputDecl | NodeDecl):
        report.error(
            "not-a-node",
            f"'{text}' is {describe(decl)}, not a node"
            + (f"; use it as template={text}" if isinstance(decl, ConstDecl | ParamDecl) else ""),
            ref.span,
        )
        return None
    type_ = decl.type.text
    their = scope.sizes.get(text)
    nodes = expanded(text, their)
    if ref.index is None:
        if their is None:
            return Binding("single", type_, ref.span, name=text, nodes=nodes)
        return Binding("whole", f"{type_} list", ref.span, name=text, nodes=nodes)
    if their is None:
        report.error(
            "index-non-plate",
            f"'{text}' is not a plate, so it takes no index",
            ref.index.span,
            [Note(f"'{text}' is declared here", decl.name.span)],
        )
        return None
    if isinstance(ref.index, Name):
        return _matching(ref, ref.index, size, their, nodes, decl, report)
    k = ref.index.value
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < their:
        report.error(
            "index-range", f"index {k} is out of range: '{text}' has nodes 0 to {their - 1}", ref.index.span
        )
        return None
    return Binding("fixed", type_, ref.span, name=text, nodes=(nodes[k],))


def _matching(
    ref: Ref,
    index: Name,
    size: int | None,
    their: int,
    nodes: tuple[str, ...],
    decl: InputDecl | NodeDecl,
    report: Report,
) -> Binding | None:
    """`x[i]` inside a plate: member k reads member k of x, so both plates must have one size."""
    text = ref.name.text
    if index.text != INDEX:
        report.error("bad-index", f"an index is a number or '{INDEX}', not '{index.text}'", index.span)
        return None
    if size is None:
        report.error(
            "plate-index",
            f"'{text}[{INDEX}]' needs a plate: declare this node as a plate of {their}, "
            f"such as 'x[{their}] : ...'",
            ref.span,
        )
        return None
    if size != their:
        report.error(
            "plate-size-mismatch",
            f"plates of different sizes: '{text}' has {their} nodes, this plate has {size}",
            ref.span,
            [Note(f"'{text}' is declared here", decl.name.span)],
        )
        return None
    return Binding("matching", decl.type.text, ref.span, name=text, nodes=nodes)
