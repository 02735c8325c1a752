"""Text parameters in the language and at run time: `param` and `demos=K` checked and drawn, which factors
each param enters, binding new text into a system, demonstrations rendered as plain text and as chat
turns (each prompt against one built by hand), and weights and text loaded together."""

import json

import pytest
import torch
from chat_models import chat_lm
from conftest import CORPUS

import compound
from compound import ir
from compound.diagnostics import CompoundError
from compound.testing import tiny_causal_lm
from compound.text import TEXT_FILE, Text, bind, seed
from compound.text import write as write_text

PROGRAM = """system s
param instruction = "Q: {question}\\nA:"
param persona = "You are terse."
component lm = causal_lm("LM", chat=CHAT, system_prompt=persona)
input question : text
answer : text ~ lm(question, template=instruction, demos=2, max_new_tokens=4)
output answer
"""


def program(folder, chat: bool) -> str:
    return PROGRAM.replace("LM", str(folder)).replace("CHAT", "true" if chat else "false")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    return {"plain": tiny_causal_lm(root / "gpt2", CORPUS), "chat": chat_lm(root / "qwen2", "qwen2")}


def test_params_and_demos_are_checked_and_drawn(compile_text, tmp_path):
    result = compile_text(program("m", False) + 'param unused = "x"\n')
    system = result.system
    assert [(p.name, [(u.kind, u.owner, u.option) for u in p.uses]) for p in system.params] == [
        ("instruction", [("node", "answer", "template")]),
        ("persona", [("component", "lm", "system_prompt")]),
        ("unused", []),
    ]
    assert [d.code for d in result.warnings] == ["unused"]
    assert compound.formula(system) == "log p(s|x) = log p_lm(answer | question; instruction, persona)"
    from compound.viz import draw

    source = draw(system).source
    assert '"instruction (param)"' in source and '"persona (param)" -> answer' in source


@pytest.mark.parametrize(
    ("text", "code", "where"),
    [
        ('param p = "m"\ncomponent w = causal_lm(p)\n', "param-use", (3, 25)),
        ('param p = "q_proj"\ncomponent w = causal_lm("m", lora(target_modules=p))\n', "param-use", (3, 30)),
        ('param p = "x"\ncomponent w = causal_lm("m")\n', None, None),
    ],
)
def test_a_param_goes_where_text_fits_only(compile_text, text, code, where):
    tail = "input q : text\na : text ~ w(q, max_new_tokens=4)\noutput a\n"
    if code is None:  # a param in an option that takes a number is refused as any string is
        tail = "input q : text\na : text ~ w(q, max_new_tokens=p)\noutput a\n"
        with pytest.raises(CompoundError, match=r"max_new_tokens= takes a whole number.*not \"x\""):
            compile_text("system s\n" + text + tail)
        return
    with pytest.raises(CompoundError) as found:
        compile_text("system s\n" + text + tail)
    (d,) = [d for d in found.value.diagnostics if d.code == code]
    assert (d.span.line, d.span.column) == where


def test_demos_take_a_causal_lms_node_only(compile_text):
    head = 'system s\ncomponent p = diffusion("m")\ninput c : text\n'
    with pytest.raises(CompoundError, match="has no option 'demos'"):
        compile_text(head + "i : image ~ p(c, demos=2)\noutput i\n")


def test_bind_puts_each_params_text_at_its_uses_and_refuses_text_that_does_not_fit(compile_text):
    system = compile_text(program("m", True)).system
    demo = ir.Demo(prompt="Q: 1+1?\nA:", output=" 2")
    bound = bind(
        system,
        Text({"instruction": "Question: {question}\nAnswer:", "persona": "Be kind."}, {"answer": (demo,)}),
    )
    assert bound.node("answer").options["template"] == "Question: {question}\nAnswer:"
    assert bound.component("lm").options["system_prompt"] == "Be kind."
    assert (
        bound.node("answer").demos == (demo,)
        and {p.name: p.value for p in bound.params}["persona"] == "Be kind."
    )
    assert bind(bound, seed(system)).node("answer").options["template"] == "Q: {question}\nA:"
    for text, match in (
        (
            Text({"instruction": "Q: {qestion}"}),
            r"names \{qestion\}, which is not one of its arguments \(question\)",
        ),
        (Text({"nope": "x"}), "declares no param nope"),
        (Text({}, {"answer": (demo, demo, demo)}), r"takes 2 demonstrations \(demos=2\), not 3"),
        (Text({}, {"question": (demo,)}), "'question' takes no demonstrations"),
    ):
        with pytest.raises(CompoundError, match=match):
            bind(system, text)


def test_plain_demonstrations_come_before_the_prompt_and_are_scored_with_it(models, write_system):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    system = compound.load(write_system(program(models["plain"], False)))
    demos = (ir.Demo(prompt="Q: 1+1?\nA:", output=" 2"), ir.Demo(prompt="Q: 2+1?\nA:", output=" 3"))
    system.set_text(Text({}, {"answer": demos}))
    (trace,) = system.trace([{"question": "2+2?", "answer": " 4"}], reference=False)
    prompt = "Q: 1+1?\nA: 2\n\nQ: 2+1?\nA: 3\n\nQ: 2+2?\nA:"  # by hand
    assert system.backend("lm").prompt(trace["answer"].prompt, system.system.node("answer").demos) == prompt
    tokenizer = AutoTokenizer.from_pretrained(models["plain"])
    model = AutoModelForCausalLM.from_pretrained(models["plain"])
    ids = tokenizer(prompt + " 4" + tokenizer.eos_token)["input_ids"]
    start = len(tokenizer(prompt)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = sum(float(logits[k - 1, ids[k]]) for k in range(start, len(ids)))
    assert trace["answer"].score == pytest.approx(expected, abs=1e-4)
    (alone,) = compound.load(system.system.file).trace(
        [{"question": "2+2?", "answer": " 4"}], reference=False
    )
    assert alone["answer"].score != pytest.approx(expected, abs=1e-3)  # the demonstrations count


def test_chat_demonstrations_are_earlier_turns_after_the_system_prompt(models, write_system):
    from transformers import AutoTokenizer

    system = compound.load(write_system(program(models["chat"], True)))
    demo = ir.Demo(prompt="Q: 1+1?\nA:", output="2")
    system.set_text(Text({"persona": "Be brief."}, {"answer": (demo,)}))
    tokenizer = AutoTokenizer.from_pretrained(models["chat"])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: 1+1?\nA:"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Q: 2+2?\nA:"},
    ]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    backend = system.backend("lm")
    assert backend.prompt("Q: 2+2?\nA:", system.system.node("answer").demos) == expected
    tokens = backend.prepare("Q: 2+2?\nA:", "4", {"demonstrations": (demo,)})
    whole = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "4"}], tokenize=True, return_dict=False
    )
    assert list(tokens.prompt) + list(tokens.completion) == list(whole)
    rows = system.sample([{"question": "2+2?"}], generator=torch.Generator().manual_seed(0))
    assert isinstance(rows[0]["answer"], str)


def test_weights_and_text_load_together(models, write_system, tmp_path):
    cmp = write_system(program(models["plain"], False))
    text = Text(
        {"instruction": "Question: {question}\nAnswer:"},
        {"answer": (ir.Demo(prompt="Question: 1?\nAnswer:", output=" 1"),)},
    )
    (tmp_path / "final").mkdir()
    write_text(tmp_path / "final" / TEXT_FILE, text)
    loaded = compound.load(cmp, weights=tmp_path / "final")
    assert loaded.text == Text(
        {"instruction": "Question: {question}\nAnswer:", "persona": "You are terse."}, dict(text.demos)
    )
    (tmp_path / "final" / TEXT_FILE).write_text(json.dumps({"params": {"instruction": 3}}))
    with pytest.raises(CompoundError, match="params is a table of texts"):
        compound.load(cmp, weights=tmp_path / "final")
