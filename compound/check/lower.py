"""Pass 2: lower each statement to the IR: consts, components, nodes (plates expanded), outputs.

Names resolve through the `Scope` of pass 1; each call is checked against its
callee (`calls`), each argument bound once per declaration (`bind`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from compound import ir
from compound.backends import COMPONENT_OPTIONS, FORBIDDEN, NODE_OPTIONS, TYPES, kind, kinds
from compound.backends.fn import FUNCTIONS
from compound.check.bind import Binding, bind
from compound.check.calls import (
    Callee,
    check_call,
    check_node_options,
    check_template,
    option_error,
    positive,
    unknown_option,
)
from compound.check.declare import Scope, describe, expanded
from compound.diagnostics import Report
from compound.limits import DEFAULT, Limits
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
    ParamDecl,
    Program,
)


class ParamText(str):
    """A param's text in an option while lowering: text like a const's, that remembers its param (the
    checked IR holds plain text and each param's uses)."""

    param: str


@dataclass(frozen=True)
class Lowered:
    """A program's IR pieces, nodes in source order (pass 3 orders them)."""

    consts: tuple[ir.Const, ...]
    params: tuple[ir.Param, ...]
    components: tuple[ir.Component, ...]
    plates: tuple[ir.Plate, ...]
    nodes: tuple[ir.Node, ...]
    outputs: tuple[str, ...]


@dataclass
class _Budget:
    """Nodes and parent links expanded so far, against the limits: counted before a plate expands."""

    limits: Limits
    nodes: int = 0
    edges: int = 0

    def spend(self, nodes: int, edges: int) -> str | None:
        """Take `nodes` and `edges`; the limit they would pass, if any (then nothing is taken)."""
        if self.nodes + nodes > self.limits.nodes:
            return f"{self.limits.nodes:,} nodes (Limits.nodes)"
        if self.edges + edges > self.limits.edges:
            return f"{self.limits.edges:,} parent links (Limits.edges)"
        self.nodes, self.edges = self.nodes + nodes, self.edges + edges
        return None


def lower(program: Program, scope: Scope, report: Report, limits: Limits = DEFAULT) -> Lowered:
    """Lower every statement of `program`; errors go to `report`."""
    budget = _Budget(limits)
    statements = program.statements
    consts = tuple(
        ir.Const(name=s.name.text, value=str(s.value.value), span=s.span)
        for s in statements
        if isinstance(s, ConstDecl)
    )
    uses: dict[str, list[ir.ParamUse]] = {}
    components = tuple(
        c for s in statements if isinstance(s, ComponentDecl) if (c := _component(s, scope, report, uses))
    )
    nodes: list[ir.Node] = []
    plates: list[ir.Plate] = []
    for s in statements:
        if isinstance(s, InputDecl):
            budget.spend(1, 0)
            nodes.append(_input(s, report))
        elif isinstance(s, NodeDecl):
            nodes += _node(s, scope, report, budget, uses)
            size = scope.sizes.get(s.name.text)
            if size is not None:
                plates.append(
                    ir.Plate(name=s.name.text, size=size, nodes=expanded(s.name.text, size), span=s.span)
                )
    outputs = _outputs(program, [s for s in statements if isinstance(s, OutputDecl)], scope, report)
    params = tuple(
        ir.Param(
            name=s.name.text, value=str(s.value.value), span=s.span, uses=tuple(uses.get(s.name.text, ()))
        )
        for s in statements
        if isinstance(s, ParamDecl)
    )
    return Lowered(consts, params, components, tuple(plates), tuple(nodes), outputs)


def _record(
    uses: dict[str, list[ir.ParamUse]], kind: str, owner: str, options: dict[str, ir.Value]
) -> dict[str, ir.Value]:
    """The params among an owner's options, as its uses; the options with their text as plain text."""
    plain: dict[str, ir.Value] = {}
    for key, value in options.items():
        if isinstance(value, ParamText):
            found = ir.ParamUse(kind="component" if kind == "component" else "node", owner=owner, option=key)
            uses.setdefault(value.param, []).append(found)
            value = str(value)
        plain[key] = value
    return plain


# ---------------------------------------------------------------- declarations


_TYPES: dict[str, ir.Type] = {"text": "text", "image": "image"}


def _type(name: Name, report: Report) -> ir.Type | None:
    if name.text in _TYPES:
        return _TYPES[name.text]
    report.unknown("unknown-type", "type", name.text, name.span, TYPES, f"types: {', '.join(TYPES)}")
    return None


def _component(
    decl: ComponentDecl, scope: Scope, report: Report, uses: dict[str, list[ir.ParamUse]]
) -> ir.Component | None:
    call = decl.call
    name = call.callee.text
    spec = kind(name)
    if spec is None:
        every = kinds()
        report.unknown(
            "unknown-kind", "component kind", name, call.callee.span, every, f"kinds: {', '.join(every)}"
        )
    path = _value(call.args[0], scope, report) if call.args else None
    if isinstance(path, ParamText):
        report.error(
            "param-use",
            f"'{path.param}' is a param, text an optimizer changes; a model's path is not: give it as a "
            "string or a const",
            call.args[0].span,
        )
        return None
    if not isinstance(path, str):
        report.error(
            "component-path",
            f"component '{decl.name.text}' needs the model's path (a string) as its first argument",
            call.args[0].span if call.args else call.span,
        )
    options = _options(call, scope, report)
    for extra in call.args[1:]:
        if isinstance(extra, CallExpr):
            if extra.callee.text in options:
                report.error("duplicate-option", f"option '{extra.callee.text}' is given twice", extra.span)
            value = _value(extra, scope, report)
            if value is not None:
                options[extra.callee.text] = value
        else:
            report.error(
                "component-args",
                "after the path, a component takes calls such as lora(r=8) or key=value options",
                extra.span,
            )
    given = [(o.key.text, o.key.span, o.value.span) for o in call.options]
    given += [(a.callee.text, a.callee.span, a.span) for a in call.args[1:] if isinstance(a, CallExpr)]
    for key, key_span, value_span in given:
        if key in FORBIDDEN:
            report.error(
                "remote-code",
                f"a .cmp file cannot turn on {key}: it would run Python code from the model's folder; "
                f"the caller may, with compound.load(..., {key}=True) or --{key.replace('_', '-')}",
                key_span,
            )
        elif key in COMPONENT_OPTIONS:
            if wrong := positive(key, options.get(key)):
                report.error("option-type", wrong, value_span)
        elif spec is not None and spec.component_options is not None:
            if key not in spec.component_options:
                message = unknown_option(f"a {name} component", key, spec.component_options)
                report.error("unknown-option", message, key_span)
            elif wrong := option_error(key, spec.component_options[key], options.get(key)):
                report.error("option-type", wrong, value_span)
    if report.failed or not isinstance(path, str):
        return None
    options = _record(uses, "component", decl.name.text, options)
    return ir.Component(name=decl.name.text, kind=name, path=path, options=options, span=decl.span)


def _options(call: CallExpr, scope: Scope, report: Report) -> dict[str, ir.Value]:
    options: dict[str, ir.Value] = {}
    for option in call.options:
        key = option.key.text
        if key in options:
            report.error("duplicate-option", f"option '{key}' is given twice", option.key.span)
        value = _value(option.value, scope, report)
        if value is not None:
            options[key] = value
    return options


def _value(expr: Expr, scope: Scope, report: Report) -> ir.Value | None:
    """An option's value: a literal, a const, or a call such as `lora(r=8)`; None if invalid."""
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, CallExpr):
        args = tuple(v for a in expr.args if (v := _value(a, scope, report)) is not None)
        options = _options(expr, scope, report)
        nested = [v for v in (*args, *options.values()) if isinstance(v, ParamText)]
        if nested:
            report.error(
                "param-use",
                f"'{nested[0].param}' is a param: it goes in an option of a component or a node "
                f"(template=, system_prompt=, ...), not inside {expr.callee.text}(...)",
                expr.span,
            )
        return ir.Call(name=expr.callee.text, args=args, options=options)
    decl = scope.resolve(expr.name, report)
    if isinstance(decl, ConstDecl) and expr.index is None:
        return str(decl.value.value)
    if isinstance(decl, ParamDecl) and expr.index is None:
        text = ParamText(str(decl.value.value))
        text.param = decl.name.text
        return text
    if decl is not None:
        report.error(
            "option-value",
            f"an option takes a literal, a const, a param or a call; '{expr.name.text}' is "
            f"{describe(decl)} (pass nodes as positional arguments)",
            expr.span,
        )
    return None


def _input(decl: InputDecl, report: Report) -> ir.InputNode:
    type_ = _type(decl.type, report) or "text"
    return ir.InputNode(name=decl.name.text, base=decl.name.text, type=type_, span=decl.span)


# ---------------------------------------------------------------- generated nodes


def _node(
    decl: NodeDecl, scope: Scope, report: Report, budget: _Budget, uses: dict[str, list[ir.ParamUse]]
) -> list[ir.Node]:
    name = decl.name.text
    if scope.decls.get(name) is not decl:  # a duplicate, already reported
        return []
    size = scope.sizes[name]
    type_ = _type(decl.type, report)
    callee = _callee(decl, scope, report)
    bindings = [bind(arg, size, scope, report) for arg in decl.call.args]
    options = _options(decl.call, scope, report)
    check_node_options(decl, options, report)
    resolved = [b for b in bindings if b is not None]
    if callee is not None and len(resolved) == len(bindings):
        check_call(decl, callee, resolved, options, type_, report)
    template = options.get("template")
    if isinstance(template, str):
        check_template(decl, template, resolved, report, budget.limits.template_fields)
    if report.failed:
        return []
    options = _record(uses, "node", name, options)
    links = sum(1 if b.mode == "matching" else len(b.nodes) for b in resolved)
    passed = budget.spend(size or 1, (size or 1) * links)
    if passed is not None:
        report.error("too-big", f"'{name}' takes the program past {passed}", decl.span)
        return []
    members = [None] if size is None else list(range(size))
    return [
        _member(decl, type_ or "text", node, k, resolved, options)
        for k, node in zip(members, expanded(name, size), strict=True)
    ]


def _member(
    decl: NodeDecl,
    type_: ir.Type,
    name: str,
    k: int | None,
    bindings: list[Binding],
    options: dict[str, ir.Value],
) -> ir.Node:
    """Plate member k of a declaration (the declaration itself outside plates)."""
    common = {
        "name": name,
        "base": decl.name.text,
        "index": k,
        "type": type_,
        "args": tuple(b.arg(k) for b in bindings),
        "options": options,
        "span": decl.span,
    }
    if decl.sampled:
        return ir.SampleNode(component=decl.call.callee.text, **common)
    return ir.ComputeNode(function=decl.call.callee.text, **common)


def _callee(decl: NodeDecl, scope: Scope, report: Report) -> Callee | None:
    """The component or function a node calls, if it can be checked against."""
    name = decl.call.callee
    target = scope.decls.get(name.text)
    if isinstance(target, ComponentDecl):
        scope.used.add(name.text)
        if not decl.sampled:
            report.error(
                "call-kind",
                f"'{name.text}' is a component: a sampled node uses '~', as in "
                f"'{decl.name.text} : {decl.type.text} ~ {name.text}(...)'",
                name.span,
            )
        spec = kind(target.call.callee.text)
        if spec is None:
            return None
        allowed = None if spec.node_options is None else {**dict.fromkeys(NODE_OPTIONS), **spec.node_options}
        return Callee(name.text, f"{name.text} ({spec.name})", spec.signature, allowed)
    if target is None and name.text in FUNCTIONS:
        if decl.sampled:
            report.error(
                "call-kind",
                f"'{name.text}' is a deterministic function: a computed node uses '=', as in "
                f"'{decl.name.text} : {decl.type.text} = {name.text}(...)'",
                name.span,
            )
        signature = FUNCTIONS[name.text].signature
        return Callee(name.text, f"{name.text}()", signature, signature.options)
    if target is not None:
        scope.used.add(name.text)
        report.error(
            "not-callable", f"'{name.text}' is {describe(target)}, not a component or function", name.span
        )
    else:
        components = (n for n, d in scope.decls.items() if isinstance(d, ComponentDecl))
        candidates = itertools.chain(components, FUNCTIONS)
        known = f"functions: {', '.join(FUNCTIONS)}"
        report.unknown("unknown-name", "component or function", name.text, name.span, candidates, known)
    return None


# ---------------------------------------------------------------- outputs


def _outputs(program: Program, statements: list[OutputDecl], scope: Scope, report: Report) -> tuple[str, ...]:
    if not statements:
        report.error(
            "no-output",
            f"system '{program.name.text}' declares no output; add 'output NAME' for its final node(s)",
            program.name.span,
        )
        return ()
    names: list[str] = []
    for ref in (r for s in statements for r in s.refs):
        decl = scope.resolve(ref.name, report)
        if decl is None:
            continue
        if not isinstance(decl, NodeDecl):
            report.error(
                "output-kind",
                f"output '{ref.name.text}' is {describe(decl)}; outputs are sampled or computed nodes",
                ref.span,
            )
            continue
        if ref.index is None:
            names += expanded(ref.name.text, scope.sizes.get(ref.name.text))
        elif isinstance(ref.index, Name):
            report.error(
                "bad-index",
                f"an output is a node, a whole plate or one member such as '{ref.name.text}[0]'",
                ref.index.span,
            )
        elif (binding := bind(ref, None, scope, report)) is not None:
            names += binding.nodes
    return tuple(dict.fromkeys(names))
