"""`log_ratio` over whole DAGs against brute force, batching, seeding, sampling and row errors."""

import numpy as np
import pytest
import torch
from conftest import CORPUS, perturb, pipeline_parts
from PIL import Image
from transformers import AutoTokenizer

import compound
from compound.diagnostics import CompoundError


def lm_logp(model, tokenizer, prompt: str, text: str) -> float:
    """log p(text + EOS | prompt) by transformers' own loss: mean CE over the completion, times its length."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + text + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    labels = [-100] * len(prompt_ids) + ids[len(prompt_ids) :]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    return -out.loss.item() * (len(ids) - len(prompt_ids))


def lm_log_ratio(backend, tokenizer, prompt, text):
    with backend.reference() as reference:
        return lm_logp(backend.model, tokenizer, prompt, text) - lm_logp(reference, tokenizer, prompt, text)


def pictures(seed: int, count: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L") for _ in range(count)]


@pytest.fixture
def chain(tiny, write_system):
    cmp = write_system(
        f'system chain\ncomponent first = causal_lm("{tiny["lm"]}")\n'
        f'component second = causal_lm("{tiny["lm2"]}")\n'
        'input x : text\na : text ~ first(x, template="Q: {x}\\nA:")\n'
        'b : text ~ second(a, template="Say: {a}.")\n'
        "output b\n"
    )
    system = compound.load(cmp)
    perturb(system.backend("first").model, seed=1, scale=0.2)
    perturb(system.backend("second").model, seed=2, scale=0.2)
    chosen = [
        {"x": "two plus two?", "a": " four", "b": " yes"},
        {"x": "sky?", "a": " blue", "b": " indeed so"},
    ]
    rejected = [{"x": "two plus two?", "a": " five", "b": " no"}, {"x": "sky?", "a": " green", "b": " hm"}]
    return system, chosen, rejected


def test_two_node_chain_equals_brute_force(chain, tiny):
    system, chosen, rejected = chain
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    out = system.log_ratio(chosen, rejected)
    first, second = system.backend("first"), system.backend("second")
    for side, rows in ((0, chosen), (1, rejected)):
        for k, row in enumerate(rows):
            a = lm_log_ratio(first, tokenizer, f"Q: {row['x']}\nA:", row["a"])
            b = lm_log_ratio(second, tokenizer, f"Say: {row['a']}.", row["b"])
            assert out.per_node["a"][side][k].item() == pytest.approx(a, abs=1e-4)
            assert out.per_node["b"][side][k].item() == pytest.approx(b, abs=1e-4)
            total = out.chosen if side == 0 else out.rejected
            assert total[k].item() == pytest.approx(a + b, abs=1e-4)
            assert abs(a) > 1e-3 and abs(b) > 1e-3


def test_weights_scale_a_nodes_term(tiny, write_system):
    cmp = write_system(
        f'system w\ncomponent lm = causal_lm("{tiny["lm"]}")\ninput x : text\n'
        "y : text ~ lm(x, weight=0.25)\noutput y\n"
    )
    system = compound.load(cmp)
    perturb(system.backend("lm").model, scale=0.2)
    out = system.log_ratio([{"x": "hi", "y": " there"}], [{"x": "hi", "y": " you"}])
    raw = system.scores([{"x": "hi", "y": " there"}], [{"x": "hi", "y": " you"}])
    expected = 0.25 * (raw.policy["y"][0] - raw.reference["y"][0])
    assert out.chosen.item() == pytest.approx(expected.item(), abs=1e-6)


def storyboard(tiny, write_system, timesteps: int = 1):
    cmp = write_system(
        f'system storyboard\ncomponent writer = causal_lm("{tiny["lm"]}")\n'
        f'component painter = diffusion("{tiny["painter"]}", timesteps={timesteps})\n'
        'input request : text\nplan : text ~ writer(request, template="Three scenes, {request}:\\n")\n'
        "scene[3] : text = line(plan, i)\nimage[3] : image ~ painter(scene[i])\noutput image\n"
    )
    system = compound.load(cmp)
    perturb(system.backend("writer").model, seed=3, scale=0.2)
    perturb(system.backend("painter").model, seed=4, scale=0.02)
    plan_c, plan_r = "disc small\ndisc medium\ndisc large", "disc large\ndisc small\ndisc medium"
    chosen = [
        {"request": "a disc growing", "plan": plan_c, "image": pictures(0, 3)},
        {"request": "a dot moving", "plan": "dot left\ndot middle\ndot right", "image": pictures(1, 3)},
    ]
    rejected = [
        {"request": "a disc growing", "plan": plan_r, "image": pictures(2, 3)},
        {"request": "a dot moving", "plan": "dot right\ndot left\ndot left", "image": pictures(3, 3)},
    ]
    return system, chosen, rejected


def denoising_mse(model, folder, caption, image, seed, k):
    """Mean-pixel MSE averaged over k (t, noise) draws from `seed`, computed by hand."""
    tokenizer, text_encoder, scheduler = pipeline_parts(folder)
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (k,), generator=g)
    noise = torch.randn((k, 1, 16, 16), generator=g)
    ids = tokenizer([caption], padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    hidden = text_encoder(ids.input_ids)[0].expand(k, -1, -1)
    x0 = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)[None, None].expand(k, -1, -1, -1)
    with torch.no_grad():
        pred = model(scheduler.add_noise(x0, noise, t), t, hidden).sample
    return ((pred - noise) ** 2).mean().item()


@pytest.mark.parametrize("timesteps", [1, 3])
def test_storyboard_equals_brute_force(tiny, write_system, timesteps):
    system, chosen, rejected = storyboard(tiny, write_system, timesteps)
    out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(5))
    seeds = torch.randint(0, 2**62, (2, 4), generator=torch.Generator().manual_seed(5))
    writer, painter = system.backend("writer"), system.backend("painter")
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    for side, rows in ((0, chosen), (1, rejected)):
        for k, row in enumerate(rows):
            plan = lm_log_ratio(writer, tokenizer, f"Three scenes, {row['request']}:\n", row["plan"])
            assert out.per_node["plan"][side][k].item() == pytest.approx(plan, abs=1e-4)
            total = plan
            for j, scene in enumerate(row["plan"].split("\n")):
                with painter.reference() as reference:
                    ref = denoising_mse(
                        reference, tiny["painter"], scene, row["image"][j], int(seeds[k, 1 + j]), timesteps
                    )
                pol = denoising_mse(
                    painter.model, tiny["painter"], scene, row["image"][j], int(seeds[k, 1 + j]), timesteps
                )
                term = painter.T * (ref - pol)
                assert out.per_node[f"image[{j}]"][side][k].item() == pytest.approx(term, rel=1e-4, abs=1e-3)
                total += term
            assert (out.chosen if side == 0 else out.rejected)[k].item() == pytest.approx(
                total, rel=1e-4, abs=1e-3
            )


def test_chosen_and_rejected_images_of_a_pair_share_their_draws(tiny, write_system):
    """Same image on both sides -> the diffusion terms cancel exactly: same t and noise on both sides."""
    system, chosen, _ = storyboard(tiny, write_system, timesteps=2)
    rejected = [dict(row, plan=row["plan"] + "\nextra") for row in chosen]
    out = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(0))
    for j in range(3):
        c, r = out.per_node[f"image[{j}]"]
        assert torch.equal(c, r)
    assert not torch.equal(*out.per_node["plan"])


def test_batched_equals_one_at_a_time_and_a_seed_gives_the_same_numbers(tiny, write_system):
    system, chosen, rejected = storyboard(tiny, write_system, timesteps=2)
    batched = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(1))
    again = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(1))
    other = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(2))
    for name in system.components:
        system.backend(name).batch_size = 1
    single = system.log_ratio(chosen, rejected, generator=torch.Generator().manual_seed(1))
    # A diffusion term is T * (mse_ref - mse_theta): float32 rounding of the mse (~1e-7, which changes
    # with the batch's reduction order) comes out multiplied by T, so its tolerance scales with T.
    diffusion_atol = system.backend("painter").T * 1e-6
    for node in batched.per_node:
        atol = 1e-5 if node == "plan" else diffusion_atol
        for side in (0, 1):
            assert torch.equal(batched.per_node[node][side], again.per_node[node][side])
            assert torch.allclose(
                batched.per_node[node][side], single.per_node[node][side], atol=atol, rtol=1e-5
            )
    assert not torch.allclose(batched.per_node["image[0]"][0], other.per_node["image[0]"][0])


def test_gradients_reach_every_component(tiny, write_system):
    system, chosen, rejected = storyboard(tiny, write_system)
    compound.sysdpo_loss(system.log_ratio(chosen, rejected), beta=0.1).backward()
    for name in ("writer", "painter"):
        grads = [p.grad for p in system.backend(name).model.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum().item() for g in grads) > 0
    (text_encoder,) = system.backend("painter").family.encoders
    assert all(p.grad is None for p in text_encoder.parameters())


@pytest.mark.parametrize("example", ["storyboard", "moa"])
def test_sample_then_log_ratio_end_to_end(example, tmp_path):
    from pathlib import Path

    from compound.testing import tiny_models

    source = Path(__file__).resolve().parents[1] / "examples" / f"{example}.cmp"
    cmp = tmp_path / source.name
    cmp.write_text(source.read_text())
    tiny_models(cmp, CORPUS)
    system = compound.load(cmp)
    inputs = [{"request": "a disc growing"}] if example == "storyboard" else [{"question": "two plus two?"}]
    rows = system.sample(
        inputs * 2, n=2, generator=torch.Generator().manual_seed(0), max_new_tokens=12, steps=4
    )
    assert len(rows) == 4
    again = system.sample(
        inputs * 2, n=2, generator=torch.Generator().manual_seed(0), max_new_tokens=12, steps=4
    )
    if example == "storyboard":
        assert all(isinstance(img, Image.Image) and img.size == (16, 16) for img in rows[0]["image"])
        assert len(rows[0]["scene"]) == 3 and rows[0]["scene"][0] == compound_line(rows[0]["plan"], 0)
        assert np.array_equal(np.asarray(rows[3]["image"][2]), np.asarray(again[3]["image"][2]))
        rows[0]["image"][0].save(tmp_path / "x.png")
    else:
        assert len(rows[0]["answer"]) == 3 and isinstance(rows[0]["final"], str)
        assert rows == again
    out = system.log_ratio(rows[0::2], rows[1::2], generator=torch.Generator().manual_seed(0))
    assert out.chosen.shape == (2,) and torch.isfinite(out.chosen).all()
    assert torch.allclose(out.chosen, torch.zeros(2))  # policy == reference before any training
    assert len(out.per_node) == 4


def compound_line(text: str, k: int) -> str:
    from compound.backends.fn import line

    return line(text, k)


def error_of(call) -> str:
    with pytest.raises(CompoundError) as info:
        call()
    return str(info.value)


def test_row_errors_name_the_row_the_node_and_its_line(tiny, write_system):
    system, chosen, rejected = storyboard(tiny, write_system)
    missing = [dict(chosen[0]), chosen[1]]
    del missing[0]["plan"]
    message = error_of(lambda: system.log_ratio(missing, rejected))
    assert "chosen row 0: 'plan' is missing" in message and "system.cmp:5:1" in message
    short = [chosen[0], dict(chosen[1], image=chosen[1]["image"][:2])]
    assert "chosen row 1: 'image' is a plate of 3, but the row gives 2 values" in error_of(
        lambda: system.log_ratio(short, rejected)
    )
    wrong = [dict(chosen[0], plan=42), chosen[1]]
    assert "'plan' is text, but the row holds int" in error_of(lambda: system.log_ratio(wrong, rejected))
    other = [dict(rejected[0], request="something else"), rejected[1]]
    message = error_of(lambda: system.log_ratio(chosen, other))
    assert "pair 0: 'request' differs" in message and "system.cmp:4:1" in message
    assert "2 chosen rows but 1 rejected" in error_of(lambda: system.log_ratio(chosen, rejected[:1]))


def test_model_folder_errors_name_the_component_and_its_line(tiny, write_system, tmp_path):
    missing = write_system(
        'system s\ncomponent lm = causal_lm("nowhere/at/all")\ninput x : text\ny : text ~ lm(x)\noutput y\n',
        "missing.cmp",
    )
    message = error_of(lambda: compound.load(missing))
    assert "component 'lm': no model folder at" in message and "missing.cmp:2:1" in message
    wrong = write_system(
        f'system s\ncomponent lm = causal_lm("{tiny["painter"]}")\ninput x : text\n'
        "y : text ~ lm(x)\noutput y\n",
        "wrong.cmp",
    )
    assert "does not hold a transformers causal LM" in error_of(lambda: compound.load(wrong))
    wrong = write_system(
        f'system s\ncomponent p = diffusion("{tiny["lm"]}")\ninput x : text\ny : image ~ p(x)\noutput y\n',
        "wrong2.cmp",
    )
    assert "does not hold a diffusion model" in error_of(lambda: compound.load(wrong))
    bad = write_system(
        f'system s\ncomponent lm = causal_lm("{tiny["lm"]}", reference="adapter")\ninput x : text\n'
        "y : text ~ lm(x)\noutput y\n",
        "bad.cmp",
    )
    assert "reference='adapter' needs LoRA adapters" in error_of(lambda: compound.load(bad))


def test_a_prompt_longer_than_the_context_loses_its_start_not_the_value(tiny, write_system):
    cmp = write_system(
        f'system s\ncomponent lm = causal_lm("{tiny["lm"]}", max_length=40)\ninput x : text\n'
        "y : text ~ lm(x)\noutput y\n"
    )
    system = compound.load(cmp)
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    long_prompt = "a lake as the ice grows " * 30
    value = " small medium large"
    with torch.no_grad():
        got = system.scores([{"x": long_prompt, "y": value}], [{"x": long_prompt, "y": " huge"}]).policy["y"][
            0
        ]
    full = tokenizer(long_prompt + value + tokenizer.eos_token)["input_ids"]
    completion = len(full) - len(tokenizer(long_prompt)["input_ids"])
    kept = full[-40:]  # the last 40 tokens: the end of the prompt, then the whole value
    labels = [-100] * (40 - completion) + kept[40 - completion :]
    with torch.no_grad():
        out = system.backend("lm").model(input_ids=torch.tensor([kept]), labels=torch.tensor([labels]))
    assert got.item() == pytest.approx(-out.loss.item() * completion, abs=1e-4)
    rows = system.sample([{"x": long_prompt}], generator=torch.Generator().manual_seed(0), max_new_tokens=8)
    assert isinstance(rows[0]["y"], str)


def test_the_chosen_nll_is_per_token_for_each_component_and_summed_over_them():
    """Hand-worked: proposer nodes a, b (4 and 2 tokens per row) and aggregator node c (3), two pairs; the
    NLL term holds each component to its chosen outputs as firmly whichever others train with it."""
    from compound.loss import chosen_nll
    from compound.types import LogRatio

    def sides(chosen: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(chosen), torch.tensor([-50.0, -50.0])  # the rejected side never counts

    policy = {"a": sides([-2.0, -4.0]), "b": sides([-1.0, -3.0]), "c": sides([-6.0, -3.0])}
    sizes = {"a": sides([4.0, 4.0]), "b": sides([2.0, 2.0]), "c": sides([3.0, 3.0])}
    exact = {"a": "proposer", "b": "proposer", "c": "aggregator"}

    def nll(nodes: str, pairs: list[int] | None = None) -> float:
        zero = torch.zeros(2)
        out = LogRatio(
            chosen=zero,
            rejected=zero,
            per_node={n: (zero, zero) for n in nodes},
            policy={n: policy[n] for n in nodes},
            sizes={n: sizes[n] for n in nodes},
            exact=exact,
        )
        return chosen_nll(out, pairs).item()

    proposer = (2 + 4 + 1 + 3) / (4 + 4 + 2 + 2)  # 10 nats over 12 tokens
    aggregator = (6 + 3) / (3 + 3)
    assert nll("ab") == pytest.approx(proposer)  # one component: the chosen tokens' mean, TRL's sft loss
    assert nll("abc") == pytest.approx(proposer + aggregator)  # not 19 nats / 18 tokens
    assert nll("c") == pytest.approx(aggregator)
    assert nll("abc", [1]) == pytest.approx((4 + 3) / (4 + 2) + 3 / 3)  # a ranked list's best output only
