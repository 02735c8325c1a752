"""Check a parsed program and lower it to the IR: names, plates, types, graph.

Each declaration's arguments are resolved once (`_Binding`) and then expanded
per plate index, so a mistake inside a plate is reported once, not once per
member. Every error is collected; the check raises `CompoundError` with all of
them (and the warnings) at the end. The graph checks (cycles, outputs that
depend on no input, unused nodes) run on the expanded DAG with networkx, once
every name resolves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal as TypingLiteral

import networkx as nx

from compound import ir
from compound.backends import TYPES, Signature, kinds
from compound.backends import signature as kind_signature
from compound.backends.fn import FUNCTIONS, template_fields
from compound.diagnostics import CompoundError, Diagnostic, Note, suggest
from compound.parse import (
    CallExpr,
    ComponentDecl,
    ConstDecl,
    Expr,
    InputDecl,
    Literal,
    Name,
    NodeDecl,
    OutputDecl,
    Program,
)

INDEX = "i"
Decl = ComponentDecl | ConstDecl | InputDecl | NodeDecl
Mode = TypingLiteral["single", "whole", "matching", "fixed", "index", "literal"]


@dataclass(frozen=True)
class _Binding:
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


def check(program: Program) -> tuple[ir.System, tuple[Diagnostic, ...]]:
    """Lower `program` to a checked `ir.System`, nodes in topological order, no factors yet.

    Returns the system and the warnings; raises `CompoundError` with every
    error found (and the warnings).
    """
    return _Checker(program).run()


def expanded(name: str, size: int | None) -> tuple[str, ...]:
    """The node names of a declaration: `x`, or `x[0]`..`x[size-1]` for a plate."""
    return (name,) if size is None else tuple(f"{name}[{k}]" for k in range(size))


class _Checker:
    def __init__(self, program: Program):
        self.program = program
        self.file = program.file
        self.diagnostics: list[Diagnostic] = []
        self.decls: dict[str, Decl] = {}
        self.sizes: dict[str, int | None] = {}
        self.used: set[str] = set()

    # ------------------------------------------------------------ reporting

    def error(self, code: str, message: str, span: ir.Span, notes: Iterable[Note] = ()) -> None:
        self.diagnostics.append(Diagnostic("error", code, message, span, tuple(notes)))

    def warn(self, code: str, message: str, span: ir.Span) -> None:
        self.diagnostics.append(Diagnostic("warning", code, message, span))

    def unknown(self, code: str, what: str, name: Name, candidates: Iterable[str], known: str = "") -> None:
        """Report an unknown name, suggesting the closest candidate; `known` lists the choices."""
        hint = suggest(name.text, candidates)
        message = f"unknown {what} '{name.text}'" + (f"; did you mean '{hint}'?" if hint else "")
        self.error(code, message + (f" ({known})" if known else ""), name.span)

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    # ------------------------------------------------------------ driver

    def run(self) -> tuple[ir.System, tuple[Diagnostic, ...]]:
        statements = self.program.statements
        self.declare(statements)
        consts = tuple(
            ir.Const(name=s.name.text, value=str(s.value.value), span=s.span)
            for s in statements
            if isinstance(s, ConstDecl)
        )
        components = tuple(c for s in statements if isinstance(s, ComponentDecl) if (c := self.component(s)))
        nodes: list[ir.Node] = []
        plates: list[ir.Plate] = []
        for s in statements:
            if isinstance(s, InputDecl):
                nodes.append(self.input(s))
            elif isinstance(s, NodeDecl):
                nodes += self.node(s)
                size = self.sizes.get(s.name.text)
                if size is not None:
                    plates.append(
                        ir.Plate(name=s.name.text, size=size, nodes=expanded(s.name.text, size), span=s.span)
                    )
        outputs = self.outputs([s for s in statements if isinstance(s, OutputDecl)])
        if not self.failed:
            nodes = self.graph(nodes, outputs)
        self.unused_declarations()
        self.diagnostics.sort(key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
        if self.failed:
            raise CompoundError(self.diagnostics, {self.file: self.program.text})
        system = ir.System(
            name=self.program.name.text,
            file=self.file,
            consts=consts,
            components=components,
            plates=tuple(plates),
            nodes=tuple(nodes),
            outputs=outputs,
        )
        return system, tuple(self.diagnostics)

    def declare(self, statements: Iterable[object]) -> None:
        for s in statements:
            if isinstance(s, OutputDecl):
                continue
            assert isinstance(s, Decl)
            name = s.name
            if name.text == INDEX:
                self.error("reserved-name", f"'{INDEX}' is reserved for the plate index", name.span)
            if name.text in self.decls:
                first = self.decls[name.text]
                self.error(
                    "duplicate-name",
                    f"'{name.text}' is declared twice",
                    name.span,
                    [Note("first declared here", first.name.span)],
                )
            else:
                self.decls[name.text] = s
                if isinstance(s, NodeDecl):
                    self.sizes[name.text] = self.plate_size(s.size)
                elif isinstance(s, InputDecl):
                    self.sizes[name.text] = None

    def plate_size(self, size: Literal | None) -> int | None:
        if size is None:
            return None
        if isinstance(size.value, int) and not isinstance(size.value, bool) and size.value >= 1:
            return size.value
        self.error("plate-size", f"a plate size is a whole number of at least 1, not {size.value}", size.span)
        return None

    # ------------------------------------------------------------ declarations

    def type(self, name: Name) -> ir.Type | None:
        if name.text in TYPES:
            return name.text  # type: ignore[return-value]
        self.unknown("unknown-type", "type", name, TYPES, f"types: {', '.join(TYPES)}")
        return None

    def component(self, decl: ComponentDecl) -> ir.Component | None:
        call = decl.call
        kind = call.callee.text
        if kind_signature(kind) is None:
            known = kinds()
            self.unknown("unknown-kind", "component kind", call.callee, known, f"kinds: {', '.join(known)}")
        path = self.value(call.args[0]) if call.args else None
        if not isinstance(path, str):
            self.error(
                "component-path",
                f"component '{decl.name.text}' needs the model's path (a string) as its first argument",
                call.args[0].span if call.args else call.span,
            )
        options = self.options(call)
        for extra in call.args[1:]:
            if isinstance(extra, CallExpr):
                if extra.callee.text in options:
                    self.error("duplicate-option", f"option '{extra.callee.text}' is given twice", extra.span)
                options[extra.callee.text] = self.value(extra)
            else:
                self.error(
                    "component-args",
                    "after the path, a component takes calls such as lora(r=8) or key=value options",
                    extra.span,
                )
        if self.failed or not isinstance(path, str):
            return None
        return ir.Component(name=decl.name.text, kind=kind, path=path, options=options, span=decl.span)

    def options(self, call: CallExpr) -> dict[str, ir.Value]:
        options: dict[str, ir.Value] = {}
        for option in call.options:
            key = option.key.text
            if key in options:
                self.error("duplicate-option", f"option '{key}' is given twice", option.key.span)
            value = self.value(option.value)
            if value is not None:
                options[key] = value
        return options

    def value(self, expr: Expr) -> ir.Value | None:
        """An option's value: a literal, a const, or a call such as `lora(r=8)`; None if invalid."""
        if isinstance(expr, Literal):
            return expr.value
        if isinstance(expr, CallExpr):
            args = tuple(v for a in expr.args if (v := self.value(a)) is not None)
            return ir.Call(name=expr.callee.text, args=args, options=self.options(expr))
        decl = self.resolve(expr.name)
        if isinstance(decl, ConstDecl) and expr.index is None:
            return str(decl.value.value)
        if decl is not None:
            self.error(
                "option-value",
                f"an option takes a literal, a const or a call; '{expr.name.text}' is "
                f"{_describe(decl)} (pass nodes as positional arguments)",
                expr.span,
            )
        return None

    def resolve(self, name: Name) -> Decl | None:
        """The declaration `name` refers to, marked used; reports an unknown name."""
        decl = self.decls.get(name.text)
        if decl is None:
            self.unknown("unknown-name", "name", name, [*self.decls, *FUNCTIONS])
            return None
        self.used.add(name.text)
        return decl

    def input(self, decl: InputDecl) -> ir.Node:
        type_ = self.type(decl.type) or "text"
        return ir.Node(name=decl.name.text, base=decl.name.text, type=type_, kind="input", span=decl.span)

    # ------------------------------------------------------------ generated nodes

    def node(self, decl: NodeDecl) -> list[ir.Node]:
        name = decl.name.text
        if self.decls.get(name) is not decl:  # a duplicate, already reported
            return []
        size = self.sizes[name]
        type_ = self.type(decl.type)
        call = decl.call
        callee, signature = self.callee(decl)
        bindings = [self.bind(arg, size) for arg in call.args]
        options = self.node_options(decl)
        resolved = [b for b in bindings if b is not None]
        if signature is not None and len(resolved) == len(bindings):
            self.signature(decl, callee, signature, resolved, options, type_)
        if isinstance(options.get("template"), str):
            self.template(decl, options["template"], resolved)
        if self.failed:
            return []
        kind = "sample" if decl.sampled else "compute"
        member = {"component": callee} if decl.sampled else {"function": callee}
        return [
            ir.Node(
                name=node,
                base=name,
                index=k,
                type=type_ or "text",
                kind=kind,
                args=tuple(b.arg(k) for b in resolved),
                options=options,
                span=decl.span,
                **member,
            )
            for k, node in zip([None] if size is None else range(size), expanded(name, size), strict=True)
        ]

    def callee(self, decl: NodeDecl) -> tuple[str, Signature | None]:
        """The component or function a node calls, and its signature if known."""
        name = decl.call.callee
        target = self.decls.get(name.text)
        if isinstance(target, ComponentDecl):
            self.used.add(name.text)
            if not decl.sampled:
                self.error(
                    "call-kind",
                    f"'{name.text}' is a component: a sampled node uses '~', as in "
                    f"'{decl.name.text} : {decl.type.text} ~ {name.text}(...)'",
                    name.span,
                )
            return name.text, kind_signature(target.call.callee.text)
        if target is None and name.text in FUNCTIONS:
            if decl.sampled:
                self.error(
                    "call-kind",
                    f"'{name.text}' is a deterministic function: a computed node uses '=', as in "
                    f"'{decl.name.text} : {decl.type.text} = {name.text}(...)'",
                    name.span,
                )
            return name.text, FUNCTIONS[name.text].signature
        if target is not None:
            self.used.add(name.text)
            self.error(
                "not-callable",
                f"'{name.text}' is {_describe(target)}, not a component or function",
                name.span,
            )
        else:
            candidates = [n for n, d in self.decls.items() if isinstance(d, ComponentDecl)] + list(FUNCTIONS)
            known = f"functions: {', '.join(FUNCTIONS)}"
            self.unknown("unknown-name", "component or function", name, candidates, known)
        return name.text, None

    def bind(self, expr: Expr, size: int | None) -> _Binding | None:
        """Resolve one positional argument of a declaration whose plate size is `size`."""
        if isinstance(expr, CallExpr):
            self.error(
                "nested-call", "a call cannot be an argument: declare it as a node of its own", expr.span
            )
            return None
        if isinstance(expr, Literal):
            if isinstance(expr.value, int) and not isinstance(expr.value, bool):
                return _Binding("literal", "int", expr.span, value=expr.value)
            self.error(
                "positional-literal",
                'positional arguments are nodes; put fixed text in template="..."',
                expr.span,
            )
            return None
        ref, text = expr, expr.name.text
        if text == INDEX and ref.index is None:
            if size is None:
                self.error(
                    "plate-index",
                    f"'{INDEX}' is the plate index: it exists only in a plate "
                    "declaration such as 'x[3] : ...'",
                    ref.span,
                )
                return None
            return _Binding("index", "int", ref.span, name=INDEX)
        decl = self.resolve(ref.name)
        if decl is None:
            return None
        if not isinstance(decl, InputDecl | NodeDecl):
            self.error(
                "not-a-node",
                f"'{text}' is {_describe(decl)}, not a node"
                + (f"; use it as template={text}" if isinstance(decl, ConstDecl) else ""),
                ref.span,
            )
            return None
        type_ = decl.type.text
        their = self.sizes.get(text)
        nodes = expanded(text, their)
        if ref.index is None:
            mode: Mode = "single" if their is None else "whole"
            return _Binding(
                mode, type_ if their is None else f"{type_} list", ref.span, name=text, nodes=nodes
            )
        if their is None:
            self.error(
                "index-non-plate",
                f"'{text}' is not a plate, so it takes no index",
                ref.index.span,
                [Note(f"'{text}' is declared here", decl.name.span)],
            )
            return None
        index = ref.index
        if isinstance(index, Name):
            if index.text != INDEX:
                self.error("bad-index", f"an index is a number or '{INDEX}', not '{index.text}'", index.span)
                return None
            if size is None:
                self.error(
                    "plate-index",
                    f"'{text}[{INDEX}]' needs a plate: declare this node as "
                    f"a plate of {their}, such as 'x[{their}] : ...'",
                    ref.span,
                )
                return None
            if size != their:
                self.error(
                    "plate-size-mismatch",
                    f"plates of different sizes: '{text}' has {their} nodes, this plate has {size}",
                    ref.span,
                    [Note(f"'{text}' is declared here", decl.name.span)],
                )
                return None
            return _Binding("matching", type_, ref.span, name=text, nodes=nodes)
        k = index.value
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < their:
            self.error(
                "index-range", f"index {k} is out of range: '{text}' has nodes 0 to {their - 1}", index.span
            )
            return None
        return _Binding("fixed", type_, ref.span, name=text, nodes=(nodes[k],))

    def node_options(self, decl: NodeDecl) -> dict[str, ir.Value]:
        options = self.options(decl.call)
        for option in decl.call.options:
            key, value = option.key.text, options.get(option.key.text)
            if key == "template" and value is not None and not isinstance(value, str):
                self.error("option-type", "template= takes a string or a const", option.value.span)
            if key == "weight" and value is not None:
                if not decl.sampled:
                    self.error(
                        "option-type",
                        "weight= scales a factor: only sampled nodes ('~') take it",
                        option.key.span,
                    )
                elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    self.error("option-type", "weight= takes a positive number", option.value.span)
        return options

    def signature(
        self,
        decl: NodeDecl,
        callee: str,
        signature: Signature,
        bindings: list[_Binding],
        options: dict[str, ir.Value],
        type_: str | None,
    ) -> None:
        call = decl.call
        target = self.decls.get(callee)
        shown = (
            f"{callee} ({target.call.callee.text})" if isinstance(target, ComponentDecl) else f"{callee}()"
        )
        if not signature.accepts(len(bindings)):
            self.error(
                "arity",
                f"{shown} takes {signature}, but is given {len(bindings)} argument"
                + ("" if len(bindings) == 1 else "s"),
                call.span,
            )
        else:
            for position, binding in enumerate(bindings):
                want = signature.param(position)
                if binding.type != want and (want, binding.type) != ("text", "text list"):
                    what = f"'{binding.name}'" if binding.name else "a number"
                    self.error(
                        "type-mismatch",
                        f"{shown} takes {want} as argument {position + 1}, but {what} is {binding.type}",
                        binding.span,
                    )
        if type_ is not None and type_ != signature.output:
            self.error(
                "type-mismatch",
                f"'{decl.name.text}' is declared {type_}, but {shown} produces {signature.output}",
                decl.type.span,
            )
        if signature.options is not None:
            for option in call.options:
                if option.key.text not in signature.options:
                    known = ", ".join(sorted(signature.options)) or "none"
                    self.error(
                        "unknown-option",
                        f"{shown} has no option '{option.key.text}' (options: {known})",
                        option.key.span,
                    )
        for missing in sorted(signature.required - set(options)):
            self.error("missing-option", f"{shown} needs the option {missing}=", call.span)

    def template(self, decl: NodeDecl, template: str, bindings: list[_Binding]) -> None:
        span = next(o.value.span for o in decl.call.options if o.key.text == "template")
        try:
            fields = template_fields(template)
        except ValueError as e:
            self.error("template-field", str(e), span)
            return
        names = [b.name for b in bindings if b.name]
        for field in dict.fromkeys(fields):
            if field not in names:
                shown = ", ".join(names) or "none"
                self.error(
                    "template-field",
                    f"template field {{{field}}} names no argument of this call (arguments: {shown})",
                    span,
                )
            elif names.count(field) > 1:
                self.error(
                    "template-field",
                    f"template field {{{field}}} is ambiguous: '{field}' is passed more than once",
                    span,
                )
        for name in dict.fromkeys(names):
            if name not in fields:
                self.warn(
                    "template-unused",
                    f"'{name}' is an argument of '{decl.name.text}' but its template never uses it",
                    span,
                )

    # ------------------------------------------------------------ outputs and graph

    def outputs(self, statements: list[OutputDecl]) -> tuple[str, ...]:
        if not statements:
            self.error(
                "no-output",
                f"system '{self.program.name.text}' declares no output; add "
                "'output NAME' for its final node(s)",
                self.program.name.span,
            )
            return ()
        names: list[str] = []
        for ref in (r for s in statements for r in s.refs):
            decl = self.resolve(ref.name)
            if decl is None:
                continue
            if not isinstance(decl, NodeDecl):
                self.error(
                    "output-kind",
                    f"output '{ref.name.text}' is {_describe(decl)}; outputs are sampled or computed nodes",
                    ref.span,
                )
                continue
            if ref.index is None:
                names += expanded(ref.name.text, self.sizes.get(ref.name.text))
            elif isinstance(ref.index, Name):
                self.error(
                    "bad-index",
                    f"an output is a node, a whole plate or one member such as '{ref.name.text}[0]'",
                    ref.index.span,
                )
            elif (binding := self.bind(ref, None)) is not None:
                names += binding.nodes
        return tuple(dict.fromkeys(names))

    def graph(self, nodes: list[ir.Node], outputs: tuple[str, ...]) -> list[ir.Node]:
        """Check the expanded DAG; return the nodes in topological order."""
        graph = nx.DiGraph()
        position = {n.name: k for k, n in enumerate(nodes)}
        graph.add_nodes_from(position)
        graph.add_edges_from((p, n.name) for n in nodes for p in n.parents)
        by_name = {n.name: n for n in nodes}
        self.cycles(graph, by_name)
        if self.failed:
            return nodes
        reached = set().union(*(nx.descendants(graph, n.name) for n in nodes if n.kind == "input"))
        for name in outputs:
            if name not in reached:
                self.error(
                    "output-no-input",
                    f"output '{name}' depends on no input: nothing it is computed from is observed",
                    by_name[name].span,
                )
        needed = set(outputs).union(*(nx.ancestors(graph, o) for o in outputs))
        warned = set()
        for n in nodes:
            if n.name not in needed and n.base not in warned:
                warned.add(n.base)
                self.warn("unused", f"'{n.base}' is not used by any output", _name_span(n))
        order = nx.lexicographical_topological_sort(graph, key=position.__getitem__)
        return [by_name[name] for name in order]

    def cycles(self, graph: nx.DiGraph, nodes: dict[str, ir.Node]) -> None:
        seen = set()
        for component in nx.strongly_connected_components(graph):
            first = next(iter(component))
            if len(component) == 1 and not graph.has_edge(first, first):
                continue
            # find_cycle follows parent -> child edges; reversed, each node depends on the next.
            cycle = [u for u, _ in nx.find_cycle(graph.subgraph(component), source=first)][::-1]
            start = min(
                range(len(cycle)), key=lambda k: (nodes[cycle[k]].span.line, nodes[cycle[k]].span.column)
            )
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
            notes = [Note(f"'{n}' is declared here", _name_span(nodes[n])) for n in cycle[1:]]
            self.error("cycle", message, _name_span(nodes[cycle[0]]), notes)

    def unused_declarations(self) -> None:
        if self.failed:
            return
        for name, decl in self.decls.items():
            if isinstance(decl, ConstDecl | ComponentDecl) and name not in self.used:
                self.warn("unused", f"{_noun(decl)} '{name}' is never used", decl.name.span)


def _name_span(node: ir.Node) -> ir.Span:
    """Where a node's declaration names it (its span covers the whole statement)."""
    s = node.span
    return s.model_copy(update={"end_line": s.line, "end_column": s.column + len(node.base)})


def _noun(decl: Decl) -> str:
    return {ComponentDecl: "component", ConstDecl: "const", InputDecl: "input"}.get(type(decl), "node")


def _describe(decl: Decl) -> str:
    noun = _noun(decl)
    return ("an " if noun[0] in "aeiou" else "a ") + noun
