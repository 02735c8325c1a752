"""The safe function library and template filling."""

import pytest

from compound.backends.fn import FUNCTIONS, fill, join, line, render, template_fields


def test_line_counts_non_blank_lines_and_is_empty_past_the_end():
    plan = "a disc, small\n\n  a disc, medium \na disc, large\n"
    assert [line(plan, k) for k in range(4)] == ["a disc, small", "a disc, medium", "a disc, large", ""]


def test_join_flattens_plates():
    assert join("x", ["y", "z"], sep="; ") == "x; y; z"


def test_plates_render_as_numbered_lines():
    assert render(["red", "blue"]) == "1. red\n2. blue"
    assert (
        fill("Q: {q}\n{a}\n{{literal}}", {"q": "2+2?", "a": ["4", "5"]}) == "Q: 2+2?\n1. 4\n2. 5\n{literal}"
    )


@pytest.mark.parametrize("template", ["{a.__class__}", "{a[0]}", "{a!r}", "{a:>10}", "{0}", "{}"])
def test_templates_accept_plain_names_only(template):
    with pytest.raises(ValueError):
        template_fields(template)


def test_functions_apply_through_one_calling_convention():
    assert FUNCTIONS["line"].apply(["a\nb", 1], {"plan": "a\nb"}, {}) == "b"
    assert FUNCTIONS["join"].apply(["a", ["b", "c"]], {}, {"sep": "+"}) == "a+b+c"
    assert FUNCTIONS["format"].apply(["x"], {"q": "x"}, {"template": "<{q}>"}) == "<x>"
