"""Chat LLMs as users bring them (Llama-3, Gemma, Mistral, Phi-3): scored as TRL tokenizes conversations
(one BOS, the template's own end of turn), sampled without a pad token, their templates' errors named."""

from pathlib import Path

import pytest
import torch
from chat_models import FAMILIES, chat_lm

import compound
from compound.diagnostics import CompoundError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    return {family: chat_lm(root / family, family, seed=k) for k, family in enumerate(FAMILIES)}


def single(tmp_path, folder, extra=""):
    path = tmp_path / "chat.cmp"
    path.write_text(
        f'system s\ncomponent w = causal_lm("{folder}", chat=true{extra})\ninput q : text\n'
        'a : text ~ w(q, template="Say hello to {q}.")\noutput a\n'
    )
    return path


def trl_logp(folder, user: str, answer: str) -> tuple[float, list[int], list[int]]:
    """TRL 1.16's conversational tokenization (prompt and prompt + answer through apply_chat_template,
    the completion after their common prefix), scored with transformers directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = [{"role": "user", "content": user}]
    prompt_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": answer}], tokenize=True, return_dict=False
    )
    shared = next(k for k, (a, b) in enumerate(zip([*prompt_ids, None], full, strict=False)) if a != b)
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0, :-1].log_softmax(-1)
    logp = logits.gather(-1, torch.tensor(full[1:])[:, None])[shared - 1 :].sum().item()
    return logp, full[:shared], full[shared:]


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_scores_are_trls_conversational_log_probs(models, tmp_path, family):
    system = compound.load(single(tmp_path, models[family]))
    backend = system.backend("w")
    with torch.no_grad():
        ours = system.scores([{"q": "Ann", "a": "Hi Ann"}], [{"q": "Ann", "a": "Go away"}], reference=False)
    for side, answer in ((0, "Hi Ann"), (1, "Go away")):
        expected, prompt, completion = trl_logp(models[family], "Say hello to Ann.", answer)
        assert ours.policy["a"][side].item() == pytest.approx(expected, abs=1e-4)
        tokens = backend.prepare("Say hello to Ann.", answer, {})
        assert (list(tokens.prompt), list(tokens.completion)) == (prompt, completion)
    tokenizer = backend.tokenizer
    if tokenizer.bos_token_id is not None and family != "phi3":
        assert list(tokens.prompt).count(tokenizer.bos_token_id) == 1  # not doubled
    end = {
        "llama3": "<|eot_id|>",
        "gemma": "<end_of_turn>",
        "mistral": "</s>",
        "phi3": "<|end|>",
        "qwen2": "<|im_end|>",
    }[family]
    assert tokenizer.convert_ids_to_tokens(backend.stop) == end
    assert end in tokenizer.decode(list(tokens.completion))


@pytest.mark.parametrize("family", ["llama3", "mistral"])
def test_a_tokenizer_without_a_pad_token_samples(models, tmp_path, family):
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(models[family]).pad_token is None
    system = compound.load(single(tmp_path, models[family]))
    rows = system.sample(
        [{"q": "Ann"}, {"q": "Bo"}], generator=torch.Generator().manual_seed(0), max_new_tokens=5
    )
    assert len(rows) == 2 and all(isinstance(r["a"], str) for r in rows)
    assert AutoTokenizer.from_pretrained(models[family]).pad_token is None  # the folder is unchanged


def test_a_templates_own_refusal_names_the_component(models, tmp_path):
    with pytest.raises(
        CompoundError, match=r"component 'w': its chat template refused the conversation: System role"
    ):
        compound.load(single(tmp_path, models["gemma"], ', system_prompt="Be brief."'))


def test_lora_finds_targets_where_peft_has_no_default(models, tmp_path, capsys):
    system = compound.load(single(tmp_path, models["phi3"], ", lora(r=4)"))
    said = capsys.readouterr().err
    assert (
        "PEFT has no default LoRA targets for phi3; adapting its attention projections o_proj, qkv_proj"
        in said
    )
    adapted = {n for n, _ in system.backend("w").model.named_parameters() if "lora_" in n}
    assert any("qkv_proj" in n for n in adapted) and any("o_proj" in n for n in adapted)


def test_system_is_a_keyword_with_a_clear_error():
    with pytest.raises(
        CompoundError, match=r"'system' is a keyword, so it cannot name an option; .*system_prompt="
    ):
        compound.compile_source(
            'system s\ncomponent w = causal_lm("m", chat=true, system="Be brief.")\ninput q : text\n'
            "a : text ~ w(q)\noutput a\n"
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_sampling_generates_what_transformers_generates(models, tmp_path, family):
    """`generate` on the chat template's prompt, stopping at the template's end of turn."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    system = compound.load(single(tmp_path, models[family]))
    ours = system.sample(
        [{"q": "Ann"}], generator=torch.Generator().manual_seed(0), max_new_tokens=8, do_sample=False
    )
    tokenizer = AutoTokenizer.from_pretrained(models[family])
    model = AutoModelForCausalLM.from_pretrained(models[family])
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello to Ann."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    end = system.backend("w").stop
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False, eos_token_id=end, pad_token_id=end)
    theirs = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert ours[0]["a"] == theirs and theirs


@pytest.mark.parametrize("family", FAMILIES)
def test_a_trained_chat_lora_exports_a_folder_transformers_scores_alike(models, tmp_path, family):
    """LoRA trained (here: moved), exported merged: TRL's conversational log-probs of the exported folder,
    computed with transformers alone, are the trained system's scores."""
    from conftest import perturb

    system = compound.load(single(tmp_path, models[family], ", lora(r=4)"))
    backend = system.backend("w")
    perturb(backend.model, scale=0.3, only="lora_B")
    with torch.no_grad():
        ours = system.scores([{"q": "Ann", "a": "Hi Ann"}], [{"q": "Ann", "a": "Go away"}], reference=False)
    backend.export(tmp_path / "out", merge=True)
    for side, answer in ((0, "Hi Ann"), (1, "Go away")):
        expected = trl_logp(tmp_path / "out", "Say hello to Ann.", answer)[0]
        assert ours.policy["a"][side].item() == pytest.approx(expected, abs=1e-4)
    assert abs(ours.policy["a"][0].item() - trl_logp(models[family], "Say hello to Ann.", "Hi Ann")[0]) > 1e-3


def test_greedy_sampling_without_a_chat_template_generates_what_transformers_generates(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path / "plain.cmp"
    path.write_text(
        f'system s\ncomponent w = causal_lm("{tiny["lm"]}")\ninput q : text\n'
        'a : text ~ w(q, template="Say hello to {q}.")\noutput a\n'
    )
    system = compound.load(path)
    ours = system.sample(
        [{"q": "Ann"}], generator=torch.Generator().manual_seed(0), max_new_tokens=8, do_sample=False
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    model = AutoModelForCausalLM.from_pretrained(tiny["lm"])
    prompt = tokenizer("Say hello to Ann.", return_tensors="pt")
    eos = tokenizer.eos_token_id
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    theirs = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert ours[0]["a"] == theirs and theirs


def test_prompts_of_different_lengths_sample_as_each_would_alone(tmp_path):
    """Batches are left-padded: a prompt must generate what it generates unpadded, alone (a GPT-2's absolute
    positions must skip the padding, or the system samples from another distribution than it scores). The
    model: the mixture-of-agents demo's shipped aggregator (a GPT2LMHeadModel that votes among answers)."""
    from importlib.resources import files

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(str(files("compound_demos") / "base" / "moa" / "aggregator"))
    path = tmp_path / "plain.cmp"
    path.write_text(
        f'system s\ncomponent w = causal_lm("{folder}", batch_size=8)\ninput q : text\n'
        'a : text ~ w(q, template="{q}\\n>")\noutput a\n'
    )
    prompts = ["12+34=\n1. 64\n2. 4\n3. 46", "1+2=\n1. 3\n2. 3\n3. 3", "99+99=\n1. 891\n2. 8911\n3. 891"]
    generator = torch.Generator().manual_seed(0)
    ours = compound.load(path).sample(
        [{"q": q} for q in prompts], generator=generator, max_new_tokens=4, do_sample=False
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert len({len(tokenizer(f"{q}\n>")["input_ids"]) for q in prompts}) == 3  # a batch would need padding
    pad = tokenizer.pad_token_id
    for q, row in zip(prompts, ours, strict=True):
        prompt = tokenizer(f"{q}\n>", return_tensors="pt")
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=pad)
        assert row["a"] == tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_choice_nodes_values_share_their_prompts_pass_and_score_each_sequence_alone(
    models, tmp_path, family, monkeypatch
):
    """A `choice=` node's values run their prompt once (left-padded, its keys and values kept); each
    value's log-probability is what transformers gives its whole sequence alone, prompts of different
    lengths in one batch, and the gradients are the whole sequences' too."""
    path = tmp_path / "choice.cmp"
    path.write_text(
        f'system s\ncomponent w = causal_lm("{models[family]}", chat=true, lora(r=2))\ninput q : text\n'
        'a : text ~ w(q, template="Is {q} kind?", choice="yes|no|maybe not")\noutput a\n'
    )
    system = compound.load(path)
    backend = system.backend("w")
    whole = type(backend)._whole_logps
    monkeypatch.setattr(type(backend), "_whole_logps", lambda *a: pytest.fail("scored whole sequences"))
    rows = [{"q": "Ann", "a": "yes"}, {"q": "a very long name, Bob Bob Bob", "a": "maybe not"}]
    with torch.no_grad():
        ours = system.scores(rows, rows, reference=False).policy["a"][0]
    for k, row in enumerate(rows):
        alone = {
            v: trl_logp(models[family], f"Is {row['q']} kind?", v)[0] for v in ("yes", "no", "maybe not")
        }
        expected = alone[row["a"]] - torch.logsumexp(torch.tensor(list(alone.values())), 0).item()
        assert ours[k].item() == pytest.approx(expected, abs=1e-4)
    items = [backend.tokens(f"Is {r['q']} kind?", v, {}) for r in rows for v in ("yes", "no", "maybe not")]
    grads = []
    for score in (
        backend._logps,
        lambda model, items: whole(backend, model, [backend._fit(s) for s in items]),
    ):
        backend.model.zero_grad()
        score(backend.model, items).sum().backward()
        grads.append({n: p.grad.clone() for n, p in backend.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_a_sliding_window_shorter_than_the_sequences_scores_each_whole(models, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compound.backends.causal_lm import CausalLM

    folder = tmp_path / "mistral-window"
    model = AutoModelForCausalLM.from_pretrained(models["mistral"])
    model.config.sliding_window = 6
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(models["mistral"]).save_pretrained(folder)
    path = tmp_path / "choice.cmp"
    path.write_text(
        f'system s\ncomponent w = causal_lm("{folder}", chat=true)\ninput q : text\n'
        'a : text ~ w(q, template="Is {q} kind?", choice="yes|no")\noutput a\n'
    )
    row = {"q": "Ann", "a": "no"}
    whole, calls = CausalLM._whole_logps, []
    monkeypatch.setattr(CausalLM, "_whole_logps", lambda *a: calls.append(1) or whole(*a))
    with torch.no_grad():
        ours = compound.load(path).scores([row], [row], reference=False).policy["a"][0][0].item()
    assert calls  # the prompt's pass kept too little to go on from
    alone = [trl_logp(folder, "Is Ann kind?", v)[0] for v in ("yes", "no")]
    assert ours == pytest.approx(alone[1] - torch.logsumexp(torch.tensor(alone), 0).item(), abs=1e-4)
