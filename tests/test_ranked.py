"""Ranked lists (the Plackett-Luce loss, against brute force and simulation) and per-node beta (the
`.cmp` file's `beta=`, the config's `node_betas`, `auto_beta`)."""

import itertools
import json
import math

import pytest
import torch
from conftest import perturb
from synth import storyboard_cmp, storyboard_prefs
from torch.nn import functional as F

import compound
from compound.diagnostics import CompoundError
from compound.loss import plackett_luce_loss, sysdpo_loss
from compound.samples import Sample
from compound.samples.pairing import pairs as make_pairs
from compound.train import Trainer

QUIET = {"quiet": True, "report_to": []}


def ranking_probability(scores: list[float], order: list[int]) -> float:
    """The Plackett-Luce probability of `order`, by its definition: each next item is drawn from those
    left with probability proportional to exp(score)."""
    left, p = list(order), 1.0
    while len(left) > 1:
        p *= math.exp(scores[left[0]]) / sum(math.exp(scores[j]) for j in left)
        left.pop(0)
    return p


def test_plackett_luce_of_two_outputs_is_the_sigmoid_loss():
    scores = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    found = plackett_luce_loss(scores, torch.full((6,), 2))
    assert found.item() == pytest.approx(-F.logsigmoid(scores[:, 0] - scores[:, 1]).mean().item(), abs=1e-6)


@pytest.mark.parametrize("n", [3, 4])
def test_plackett_luce_equals_the_ranking_likelihood_by_enumeration_and_by_simulation(n):
    scores = [0.7, -0.4, 1.3, 0.1][:n]
    every = {order: ranking_probability(scores, list(order)) for order in itertools.permutations(range(n))}
    assert sum(every.values()) == pytest.approx(1.0, abs=1e-12)  # a distribution over the n! rankings
    found = plackett_luce_loss(torch.tensor([scores], dtype=torch.float64), torch.tensor([n]))
    assert found.item() == pytest.approx(-math.log(every[tuple(range(n))]), abs=1e-9)
    # Plackett-Luce is the law of the order of Gumbel-perturbed scores: count it
    draws = 200_000
    gumbel = -torch.log(-torch.log(torch.rand(draws, n, generator=torch.Generator().manual_seed(1))))
    orders = (torch.tensor(scores) + gumbel).argsort(dim=1, descending=True)
    share = (orders == torch.arange(n)).all(dim=1).double().mean().item()
    p = every[tuple(range(n))]
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / draws)


def test_lists_of_different_lengths_in_one_batch_are_each_their_own_ranking():
    scores = torch.tensor([[0.5, 2.0, -1.0, 0.3], [1.5, -0.5, 0.0, 0.0]], requires_grad=True)
    found = plackett_luce_loss(scores, torch.tensor([4, 2]))
    alone = [
        -math.log(ranking_probability([0.5, 2.0, -1.0, 0.3], [0, 1, 2, 3])),
        -math.log(ranking_probability([1.5, -0.5], [0, 1])),
    ]
    assert found.item() == pytest.approx(sum(alone) / 2, abs=1e-6)
    found.backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[1, 2:] == 0).all()  # padding takes no part


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("ranked")
    train = storyboard_prefs(root, "train", 24, seed=0)
    pairs = [json.loads(line) for line in train.read_text().splitlines()]

    def write(name, rows):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    # three outputs: the ascending plan with discs, the ascending plan with noise, the descending with noise
    ranked = [
        {
            "input": p["input"],
            "ranked": [
                p["chosen"],
                {"plan": p["chosen"]["plan"], "image": p["rejected"]["image"]},
                p["rejected"],
            ],
        }
        for p in pairs
    ]
    return {
        "root": root,
        "cmp": storyboard_cmp(root, tiny["lm"], tiny["painter"]),
        "pairs": train,
        "ranked": write("ranked", ranked),
        "two": write("two", [{"input": p["input"], "ranked": [p["chosen"], p["rejected"]]} for p in pairs]),
        "held": storyboard_prefs(root, "held", 12, seed=1),
    }


def moved(trainer):
    """The same 'training' for every trainer: move the weights deterministically."""
    perturb(trainer.system.backend("writer").model, scale=0.3, only="lora_B")
    perturb(trainer.system.backend("painter").model, scale=0.05, seed=1)
    return trainer


def test_a_ranked_lists_loss_is_plackett_luce_over_its_outputs_system_log_ratios(setup):
    trainer = moved(Trainer(setup["cmp"], setup["ranked"], setup["root"] / "r", steps=1, beta=0.5, **QUIET))
    lists = trainer.data.pairs[:4]
    with torch.no_grad():
        found = trainer.loss(trainer.score(lists, 0)).item()
        seeds = trainer.schedule.seeds([p.row for p in lists], 0, len(trainer.system.system.factors))
        expected = 0.0
        for k, item in enumerate(lists):
            # each output scored alone, with its list's seeds
            r = [
                trainer.system.log_ratio([o], [o], seeds=seeds[k : k + 1]).chosen.item() for o in item.ranked
            ]
            assert len(r) == 3 and len(set(r)) == 3
            expected -= math.log(ranking_probability([0.5 * v for v in r], [0, 1, 2]))
    assert found == pytest.approx(expected / 4, rel=1e-5)


def test_a_ranked_list_of_two_trains_exactly_as_its_pair(setup):
    losses = []
    for name in ("pairs", "two"):
        trainer = moved(Trainer(setup["cmp"], setup[name], setup["root"] / name, steps=1, **QUIET))
        with torch.no_grad():
            losses.append(trainer.loss(trainer.score(trainer.data.pairs[:6], 0)).item())
    assert abs(losses[0] - math.log(2)) > 1e-3
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_training_on_ranked_lists_raises_held_out_accuracy(setup):
    trainer = Trainer(
        setup["cmp"],
        setup["ranked"],
        setup["root"] / "learn",
        steps=16,
        batch_size=6,
        learning_rate=1e-3,
        learning_rates={"painter": 1e-4},
        eval_data=setup["held"],
        **QUIET,
    )
    while trainer.step < trainer.total_steps - 1:
        trainer.train_step()
    # the last step's accuracy and margin, by hand: each output of each of its lists scored alone (with
    # its list's seeds, just before the step), then over each output and the one ranked below it
    step = trainer.step
    lists = trainer.batch(step, 0)
    epoch = trainer.schedule.epoch(step)
    seeds = trainer.schedule.seeds([p.row for p in lists], epoch, len(trainer.system.system.factors))
    gaps = []
    with torch.no_grad():
        for k, item in enumerate(lists):
            r = [
                trainer.system.log_ratio([o], [o], seeds=seeds[k : k + 1]).chosen.item() for o in item.ranked
            ]
            gaps += [0.1 * (r[j] - r[j + 1]) for j in range(len(r) - 1)]
    assert len(gaps) == 12  # six lists of three outputs
    last = trainer.train_step()
    assert last["rewards/accuracies"] == sum(g > 0 for g in gaps) / len(gaps)
    assert last["rewards/margins"] == pytest.approx(sum(gaps) / len(gaps), rel=1e-4, abs=1e-6)
    after = trainer.evaluate(trainer.eval_data.pairs)
    assert after["rewards/accuracies"] >= 0.8 and after["rewards/margins"] > 0


def test_ranked_rows_with_mistakes_are_reported_by_row(setup, tmp_path):
    good = json.loads(setup["ranked"].read_text().splitlines()[0])
    first, last = good["ranked"][0]["image"], good["ranked"][2]["image"]
    rows = [
        {"input": good["input"], "ranked": good["ranked"][:1]},
        {"input": good["input"], "ranked": [good["ranked"][0], good["ranked"][1], good["ranked"][0]]},
        {"input": good["input"], "ranked": [{"image": i} for i in (first, last, first[::-1])]},
        {"input": good["input"], "ranked": "best first"},
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CompoundError) as e:
        Trainer(setup["cmp"], path, tmp_path / "run", steps=1, **QUIET)
    text = str(e.value)
    assert "bad.jsonl row 1: ranked holds 1 output; a ranking needs two or more" in text
    assert "bad.jsonl row 2: ranked[2] repeats ranked[0]" in text
    assert "bad.jsonl row 3: a ranked list of more than two outputs must give every sampled node" in text
    assert "bad.jsonl row 4: ranked must be a list of objects of node values, best first" in text


def test_ranked_lists_refuse_losses_other_than_plackett_luce(setup, tmp_path):
    with pytest.raises(CompoundError, match="ranked lists train with the Plackett-Luce loss"):
        Trainer(setup["cmp"], setup["ranked"], tmp_path / "run", steps=1, loss_type="hinge", **QUIET)


def test_the_nll_of_a_ranked_list_is_that_of_its_best_output(setup):
    """A list of two with nll is its pair with nll: the NLL of the best output's LM nodes, per token."""
    losses = []
    for name in ("pairs", "two"):
        trainer = moved(
            Trainer(setup["cmp"], setup[name], setup["root"] / f"n{name}", steps=1, nll=0.5, **QUIET)
        )
        with torch.no_grad():
            losses.append(trainer.loss(trainer.score(trainer.data.pairs[:6], 0)).item())
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_pairs_ranked_keeps_one_list_per_input_best_first_without_ties():
    found = [
        Sample("0-0", {"q": "a"}, {"v": "x"}, 0.2),
        Sample("0-1", {"q": "a"}, {"v": "y"}, 0.9),
        Sample("0-2", {"q": "a"}, {"v": "z"}, 0.2),  # ties with 0-0, which comes first
        Sample("0-3", {"q": "a"}, {"v": "w"}, 0.5),
        Sample("1-0", {"q": "b"}, {"v": "x"}, 0.3),
        Sample("1-1", {"q": "b"}, {"v": "y"}, 0.3),  # a single distinct score: no ranking
    ]
    made = make_pairs(found, "ranked")
    assert made.pairs == [{"input": {"q": "a"}, "ranked": [{"v": "y"}, {"v": "w"}, {"v": "x"}]}]
    assert made.without_pair == 1 and made.gaps == [pytest.approx(0.7)]
    assert make_pairs(found, "ranked", min_gap=0.35).pairs[0]["ranked"] == [{"v": "y"}, {"v": "w"}]


# ---------------------------------------------------------------- per-node beta


def test_node_betas_give_each_node_its_own_beta(setup):
    trainer = moved(Trainer(setup["cmp"], setup["pairs"], setup["root"] / "b", steps=1, **QUIET))
    with torch.no_grad():
        out = trainer.log_ratio(trainer.data.pairs[:6], 0)
    found = sysdpo_loss(out, beta=0.1, node_betas={"plan": 2.0, "image[1]": 0.01}).item()
    gap = {n: c - r for n, (c, r) in out.per_node.items()}
    h = 2.0 * gap["plan"] + 0.1 * gap["image[0]"] + 0.01 * gap["image[1]"]
    assert found == pytest.approx(-F.logsigmoid(h).mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="the ipo loss has one beta"):
        sysdpo_loss(out, loss_type="ipo", node_betas={"plan": 2.0})


def test_a_cmp_beta_is_the_configs_node_beta(setup, tmp_path):
    text = setup["cmp"].read_text()
    cmp = tmp_path / "storyboard.cmp"
    cmp.write_text(
        text.replace("image[2] : image ~ painter(scene[i])", "image[2] : image ~ painter(scene[i], beta=3)")
    )
    losses = []
    variants = ((cmp, {}), (setup["cmp"], {"image[0]": 3.0, "image[1]": 3.0}), (setup["cmp"], {"image": 3.0}))
    for system, betas in variants:  # an array's name sets all its instances
        trainer = moved(
            Trainer(system, setup["pairs"], tmp_path / f"r{len(losses)}", steps=1, node_betas=betas, **QUIET)
        )
        assert trainer.node_betas == {"image[0]": 3.0, "image[1]": 3.0}
        with torch.no_grad():
            losses.append(trainer.loss(trainer.score(trainer.data.pairs[:6], 0)).item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) and losses[2] == pytest.approx(losses[1], abs=1e-6)
    betas = {"image": 3.0, "image[1]": 5.0}
    mixed = Trainer(setup["cmp"], setup["pairs"], tmp_path / "m", steps=1, node_betas=betas, **QUIET)
    assert mixed.node_betas == {"image[0]": 3.0, "image[1]": 5.0}  # an instance's own key wins
    cmp.write_text(text.replace("timesteps=4)", "timesteps=4, beta=3)"))  # the painter's: all its nodes
    assert [f.beta for f in compound.compile_file(cmp).factors] == [None, 3.0, 3.0]


def test_auto_beta_puts_the_painters_rewards_on_the_writers_scale(setup, tmp_path):
    """Only surrogate nodes are set; doubling a node's weight= halves its beta (beta times weight is the
    scale of its rewards); a beta given in the config is kept."""
    text = setup["cmp"].read_text()
    found = []
    for k, weight in enumerate((1, 2)):
        cmp = tmp_path / f"w{weight}.cmp"
        cmp.write_text(text.replace("painter(scene[i])", f"painter(scene[i], weight={weight})"))
        trainer = Trainer(
            cmp, setup["pairs"], tmp_path / f"a{k}", steps=1, auto_beta=True, batch_size=8, **QUIET
        )
        found.append(trainer.node_betas)
    assert set(found[0]) == {"image[0]", "image[1]"}  # the writer's plan keeps the run's beta
    for node in found[0]:
        assert found[1][node] == pytest.approx(found[0][node] / 2, rel=1e-5)
    kept = Trainer(
        setup["cmp"],
        setup["pairs"],
        tmp_path / "kept",
        steps=1,
        auto_beta=True,
        batch_size=8,
        node_betas={"image[0]": 7.0},
        **QUIET,
    )
    assert kept.node_betas["image[0]"] == 7.0 and kept.node_betas["image[1]"] == pytest.approx(
        found[0]["image[1]"]
    )
