"""Check one node's call: its arguments against the callee's signature, its options, its template."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from compound import ir
from compound.backends import Option, Signature
from compound.backends.fn import template_fields
from compound.check.bind import Binding
from compound.diagnostics import Report, suggest
from compound.grammar import quote
from compound.parse import NodeDecl


@dataclass(frozen=True)
class Callee:
    """What a node calls: a component or a function, how messages show it, what it reads and takes.

    `options` are the options a call may give, each with what it takes (None: checked by the core
    itself, as `template=` and `weight=` are); `options` None: any.
    """

    name: str
    shown: str
    signature: Signature
    options: Mapping[str, Option | None] | None


def check_call(
    decl: NodeDecl,
    callee: Callee,
    bindings: list[Binding],
    options: dict[str, ir.Value],
    type_: str | None,
    report: Report,
) -> None:
    """Arity, argument and output types, unknown and missing options."""
    call, signature, shown = decl.call, callee.signature, callee.shown
    if not signature.accepts(len(bindings)):
        report.error(
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
                report.error(
                    "type-mismatch",
                    f"{shown} takes {want} as argument {position + 1}, but {what} is {binding.type}",
                    binding.span,
                )
    if type_ is not None and type_ != signature.output:
        report.error(
            "type-mismatch",
            f"'{decl.name.text}' is declared {type_}, but {shown} produces {signature.output}",
            decl.type.span,
        )
    if callee.options is not None:
        for option in call.options:
            key = option.key.text
            if key not in callee.options:
                report.error("unknown-option", unknown_option(shown, key, callee.options), option.key.span)
                continue
            spec = callee.options[key]
            wrong = option_error(key, spec, options.get(key)) if spec is not None else None
            if wrong:
                report.error("option-type", wrong, option.value.span)
    for missing in sorted(signature.required - set(options)):
        report.error("missing-option", f"{shown} needs the option {missing}=", call.span)


def unknown_option(shown: str, key: str, known: Iterable[str]) -> str:
    """`writer (causal_lm) has no option 'temprature'; did you mean 'temperature'? (options: ...)`."""
    names = sorted(known)
    hint = suggest(key, names)
    return (
        f"{shown} has no option '{key}'"
        + (f"; did you mean '{hint}'?" if hint else "")
        + (f" (options: {', '.join(names) or 'none'})")
    )


def option_error(key: str, spec: Option, value: ir.Value | None) -> str | None:
    """What is wrong with an option's value, as a whole message; None if nothing (or if the value was
    already reported)."""
    if value is None:
        return None
    problem = spec.problem(value)
    if problem is None:
        return None
    if problem.startswith("has no option"):
        return f"{key} {problem}"
    if spec.type == "call" and not problem.startswith("takes"):
        return f"{key}: {problem}"
    return f"{key}= {problem}" + (f", not {shown(value)}" if problem.startswith("takes") else "")


def shown(value: ir.Value) -> str:
    """An option's value as a `.cmp` file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, ir.Call):
        parts = [shown(a) for a in value.args] + [f"{k}={shown(v)}" for k, v in value.options.items()]
        return f"{value.name}({', '.join(parts)})"
    return str(value)


def check_node_options(decl: NodeDecl, options: dict[str, ir.Value], report: Report) -> None:
    """The options the core reads itself: `template=` (text), `weight=` and `beta=` (positive numbers,
    on sampled nodes only)."""
    for option in decl.call.options:
        key, value = option.key.text, options.get(option.key.text)
        if key == "template" and value is not None and not isinstance(value, str):
            report.error("option-type", "template= takes a string or a const", option.value.span)
        if key in ("weight", "beta") and value is not None:
            if not decl.sampled:
                what = "scales a factor" if key == "weight" else "is a factor's DPO beta"
                report.error(
                    "option-type", f"{key}= {what}: only sampled nodes ('~') take it", option.key.span
                )
            elif wrong := positive(key, value):
                report.error("option-type", wrong, option.value.span)


def positive(key: str, value: ir.Value | None) -> str | None:
    """What is wrong with a core option that takes a positive number, if anything."""
    if value is None or (not isinstance(value, bool) and isinstance(value, int | float) and value > 0):
        return None
    return f"{key}= takes a positive number"


def check_template(
    decl: NodeDecl, template: str, bindings: list[Binding], report: Report, limit: int
) -> None:
    """Every `{field}` names exactly one argument; warn about arguments the template skips."""
    span = next(o.value.span for o in decl.call.options if o.key.text == "template")
    try:
        fields = template_fields(template)
    except ValueError as e:
        report.error("template-field", str(e), span)
        return
    if len(fields) > limit:
        report.error(
            "too-big",
            f"a template of {len(fields):,} fields: the limit is {limit:,} (Limits.template_fields)",
            span,
        )
        return
    names = [b.name for b in bindings if b.name]
    for field in dict.fromkeys(fields):
        if field not in names:
            shown = ", ".join(names) or "none"
            report.error(
                "template-field",
                f"template field {{{field}}} names no argument of this call (arguments: {shown})",
                span,
            )
        elif names.count(field) > 1:
            report.error(
                "template-field",
                f"template field {{{field}}} is ambiguous: '{field}' is passed more than once",
                span,
            )
    for name in dict.fromkeys(names):
        if name not in fields:
            report.warn(
                "template-unused",
                f"'{name}' is an argument of '{decl.name.text}' but its template never uses it",
                span,
            )
