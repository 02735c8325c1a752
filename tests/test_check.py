"""Lowering and checking: plate expansion, arguments, types, graph checks, the IR."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from compound import System
from compound.diagnostics import CompoundError

HEAD = 'system s\ncomponent writer = causal_lm("w")\ncomponent painter = diffusion("p")\ninput q : text\n'


def codes(compile_text, text: str) -> list[tuple[int, str]]:
    with pytest.raises(CompoundError) as info:
        compile_text(HEAD + text)
    return [(d.span.line, d.code) for d in info.value.diagnostics if d.severity == "error"]


def test_plates_expand_into_members_with_concrete_arguments(compile_text):
    system = compile_text(
        HEAD
        + (
            "plan : text ~ writer(q)\n"
            "scene[3] : text = line(plan, i)\n"
            "image[3] : image ~ painter(scene[i])\n"
            "pick : text ~ writer(scene[1], scene)\n"
            "output image, pick\n"
        )
    ).system
    assert [n.name for n in system.nodes if n.base == "scene"] == ["scene[0]", "scene[1]", "scene[2]"]
    s2 = system.node("scene[2]")
    assert s2.kind == "compute" and s2.function == "line" and s2.index == 2
    assert [(a.name, a.nodes, a.value) for a in s2.args] == [("plan", ("plan",), None), ("i", (), 2)]
    assert system.node("image[1]").parents == ("scene[1]",)
    pick = system.node("pick")
    assert pick.parents == ("scene[1]", "scene[0]", "scene[2]")
    assert [a.whole for a in pick.args] == [False, True]
    assert [(p.name, p.size, p.nodes) for p in system.plates] == [
        ("scene", 3, ("scene[0]", "scene[1]", "scene[2]")),
        ("image", 3, ("image[0]", "image[1]", "image[2]")),
    ]
    assert system.outputs == ("image[0]", "image[1]", "image[2]", "pick")


def test_statement_order_does_not_matter_and_nodes_come_topologically(compile_text):
    system = compile_text(
        HEAD + "output c\nc : text ~ writer(b)\nb : text ~ writer(a)\na : text ~ writer(q)\n"
    ).system
    assert [n.name for n in system.nodes] == ["q", "a", "b", "c"]
    assert [f.node for f in system.factors] == ["a", "b", "c"]


def test_consts_resolve_into_templates_and_weights_into_factors(compile_text):
    system = compile_text(
        HEAD + 'const t = "Q: {q}"\na : text ~ writer(q, template=t, weight=0.5)\noutput a\n'
    ).system
    assert system.node("a").options == {"template": "Q: {q}", "weight": 0.5}
    assert system.factors[0].weight == 0.5
    assert [c.name for c in system.consts] == ["t"]


def test_component_options_normalize_positional_calls(compile_text):
    system = compile_text(
        'system s\ncomponent w = causal_lm("m", lora(r=8), reference="adapter")\n'
        "input q : text\na : text ~ w(q)\noutput a\n"
    ).system
    (component,) = system.components
    assert component.path == "m" and component.kind == "causal_lm"
    assert component.options["reference"] == "adapter"
    assert component.options["lora"].name == "lora" and component.options["lora"].options == {"r": 8}


def test_every_error_in_a_file_is_reported(compile_text):
    found = codes(
        compile_text,
        (
            "a : txt ~ writer(q)\n"  # 5
            "b : text = writer(q)\n"  # 6
            "c : image ~ painter(q, q)\n"  # 7
            "d : text ~ writer(nope)\n"  # 8
            "e[2] : text ~ writer(a[i])\n"  # 9
            "output a, b, c, d, e\n"
        ),
    )
    assert found == [
        (5, "unknown-type"),
        (6, "call-kind"),
        (7, "arity"),
        (8, "unknown-name"),
        (9, "index-non-plate"),
    ]


def test_an_image_fed_to_a_language_model_is_a_type_error(compile_text):
    found = codes(compile_text, "pic : image ~ painter(q)\ncap : text ~ writer(q, pic)\noutput cap\n")
    assert found == [(6, "type-mismatch")]


def test_plate_errors_are_reported_once_not_per_member(compile_text):
    found = codes(compile_text, "a[3] : text ~ writer(q)\nb[4] : text ~ writer(a[i])\noutput b\n")
    assert found == [(6, "plate-size-mismatch")]


def test_a_cycle_is_reported_once_with_every_node_and_its_position(compile_text):
    with pytest.raises(CompoundError) as info:
        compile_text(HEAD + "a : text ~ writer(q, c)\nb : text ~ writer(a)\nc : text ~ writer(b)\noutput c\n")
    (error,) = info.value.diagnostics
    assert error.code == "cycle" and (error.span.line, error.span.column) == (5, 1)
    assert "'a' depends on 'c', which depends on 'b', which depends on 'a'" in error.message
    assert [(n.span.line, n.span.column) for n in error.notes] == [(7, 1), (6, 1)]


def test_a_cycle_through_plates_is_one_error(compile_text):
    found = codes(compile_text, "a[3] : text ~ writer(q, b[i])\nb[3] : text ~ writer(a[i])\noutput b\n")
    assert found == [(5, "cycle")]


def test_outputs_must_depend_on_an_input(compile_text):
    found = codes(compile_text, "free : text ~ writer()\nok : text ~ writer(q)\noutput free, ok\n")
    assert found == [(5, "output-no-input")]


def test_warnings_do_not_fail_the_check(compile_text):
    result = compile_text(HEAD + "unused : text ~ writer(q)\nout : text ~ writer(q)\noutput out\n")
    assert sorted(d.code for d in result.warnings) == ["unused", "unused"]  # the node, and 'painter'
    assert all(d.severity == "warning" for d in result.warnings)


def test_ir_round_trips_through_json(compile_text):
    path = Path(__file__).resolve().parents[1] / "examples" / "storyboard.cmp"
    system = compile_text(path.read_text(), str(path)).system
    again = System.model_validate_json(system.model_dump_json())
    assert again == system
    assert again.node("image[2]").parents == ("scene[2]",)
    with pytest.raises(ValidationError):
        system.name = "other"  # frozen


def test_a_template_field_passed_twice_is_ambiguous(compile_text):
    found = codes(
        compile_text, 'a[2] : text ~ writer(q)\nb : text ~ writer(a[0], a[1], template="{a}")\noutput b\n'
    )
    assert found == [(6, "template-field")]


def test_compiling_restores_the_garbage_collector_even_on_error(compile_text):
    import gc

    assert gc.isenabled()
    with pytest.raises(CompoundError):
        compile_text("system s\n")
    assert gc.isenabled()
