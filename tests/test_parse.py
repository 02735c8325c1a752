"""The reader: lexical structure, positions, and recovery that reports every syntax error."""

import pytest

from compound.diagnostics import CompoundError
from compound.parse import CallExpr, Literal, NodeDecl, OutputDecl, Ref, parse


def errors(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(CompoundError) as info:
        parse(text, "f.cmp")
    return [(d.span.line, d.span.column, d.code, d.message) for d in info.value.diagnostics]


def test_statements_carry_spans_and_values():
    program = parse('system s\n\n# note\nplan : text ~ writer(request, template="A {request}")\n', "f.cmp")
    assert program.name.text == "s"
    (node,) = program.statements
    assert isinstance(node, NodeDecl) and node.sampled and node.size is None
    assert (node.span.line, node.span.column, node.span.end_column) == (4, 1, 54)
    assert node.call.callee.text == "writer"
    (arg,) = node.call.args
    assert isinstance(arg, Ref) and arg.name.text == "request" and (arg.span.line, arg.span.column) == (4, 22)
    (option,) = node.call.options
    assert option.key.text == "template" and option.value.value == "A {request}"


def test_strings_escapes_numbers_and_booleans():
    program = parse(
        'system s\nconst a = "x\\ty\\n\\"q\\" \\\\ \\u00e9"\nconst b = """one\ntwo"""\n'
        'component c = causal_lm("p", lr=1e-4, r=8, x=-2.5, on=true, off=false, lora(r=4))\n',
        "f.cmp",
    )
    a, b, c = program.statements
    assert a.value.value == 'x\ty\n"q" \\ é'
    assert b.value.value == "one\ntwo"
    options = {o.key.text: o.value.value for o in c.call.options}
    assert options == {"lr": 1e-4, "r": 8, "x": -2.5, "on": True, "off": False}
    assert type(options["r"]) is int and type(options["on"]) is bool
    nested = c.call.args[1]
    assert isinstance(nested, CallExpr) and nested.callee.text == "lora"


def test_line_breaks_inside_brackets_continue_a_statement():
    program = parse(
        "system s\nfinal : text ~ agg(\n    question,\n    answer[2],\n)\noutput final\n", "f.cmp"
    )
    node, output = program.statements
    assert [a.name.text for a in node.call.args] == ["question", "answer"]
    assert isinstance(node.call.args[1].index, Literal) and node.call.args[1].index.value == 2
    assert (node.span.line, node.span.end_line) == (2, 5)
    assert isinstance(output, OutputDecl)


def test_every_broken_statement_is_reported_and_the_rest_is_read():
    found = errors(
        "system s\n"
        "input q text\n"  # missing ':'
        "input ok : text\n"
        "x : text ~ f(a b)\n"  # missing ','
        "y : text ~ f(a, $)\n"  # bad character
        "outputs y\n"  # misspelt keyword
    )
    assert [(line, col, code) for line, col, code, _ in found] == [
        (2, 9, "syntax"),
        (4, 16, "syntax"),
        (5, 17, "syntax"),
        (6, 9, "syntax"),
    ]
    assert "expected ':'" in found[0][3]
    assert "did you mean 'output' instead of 'outputs'" in found[3][3]


def test_unclosed_bracket_is_reported_at_the_bracket_and_reading_goes_on():
    found = errors("system s\nx : text ~ f(a,\ny : text ~ g(b c)\noutput x\n")
    assert found[0][:3] == (2, 13, "syntax") and "never closed" in found[0][3]
    assert found[1][:3] == (3, 16, "syntax")


def test_mismatched_bracket_and_unterminated_string():
    assert errors("system s\nx : text ~ f(a[1)\n")[0][:3] == (2, 17, "syntax")
    assert errors('system s\nconst t = "abc\n')[0][:3] == (2, 11, "syntax")


def test_keywords_are_reserved():
    found = errors("system s\ninput output : text\n")
    assert found[0][:3] == (2, 7, "syntax")


def test_escape_error_points_into_the_string():
    assert errors('system s\nconst t = """ab\nc\\qd"""\n')[0][:3] == (3, 2, "bad-escape")


def test_the_system_header_comes_first_and_once():
    assert errors("input q : text\nsystem s\n")[0][2] == "missing-system"
    assert errors("system s\nsystem t\n")[0][2] == "duplicate-system"
    assert errors("")[0][2] == "missing-system"
