"""Number-producing paths against expectations worked by hand or by brute force, written apart from the code
under test: `auto_betas`, IPO's per-node size normalisation, `node_betas` with the hinge and the robust
loss, and each node's share of a SysDPO-Sampling (marginal) log ratio."""

import math

import pytest
import torch
from conftest import perturb
from test_log_ratio import lm_logp
from transformers import AutoTokenizer

import compound
from compound.compiler import compile_source
from compound.estimators.marginal import log_ratio as marginal_log_ratio
from compound.loss import sysdpo_loss
from compound.train.betas import auto_betas
from compound.types import LogRatio, Scores


def sides(chosen: list[float], rejected: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)


def log_ratio(per_node: dict, sizes: dict | None = None) -> LogRatio:
    """A hand-built LogRatio: the totals are the nodes' sums (the losses below read `per_node`)."""
    chosen = sum(c for c, _ in per_node.values())
    rejected = sum(r for _, r in per_node.values())
    return LogRatio(
        chosen=chosen, rejected=rejected, per_node=per_node, policy={}, sizes=sizes or {}, exact={}
    )


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


# ---------------------------------------------------------------- auto_beta

AUTO = """system s
component writer = causal_lm("w")
component critic = causal_lm("c")
component painter = diffusion("p")
input request : text
plan : text ~ writer(request, weight=0.5)
note : text ~ critic(plan)
scene[3] : text = line(plan, i)
image[3] : image ~ painter(scene[i], weight=2)
output image
"""


def test_auto_betas_follow_the_documented_formula_by_hand():
    """beta_n = mean over exact nodes e of beta_e * s_e, over s_n; s_n the RMS over the batch of
    weight_n * (reference chosen - reference rejected). Three pairs, worked with floats: two exact nodes
    (one with its own beta), a surrogate node to set, one the config sets (kept out), one whose reference
    margins are all zero (no beta can match it)."""
    system = compile_source(AUTO, "auto.cmp").system
    assert {f.node: f.weight for f in system.factors} == {
        "plan": 0.5,
        "note": 1.0,
        "image[0]": 2.0,
        "image[1]": 2.0,
        "image[2]": 2.0,
    }
    reference = {
        "plan": ([-10.0, -12.0, -8.0], [-11.0, -15.0, -8.0]),  # margins 1, 3, 0
        "note": ([-4.0, -6.0, -5.0], [-6.0, -5.0, -9.0]),  # margins 2, -1, 4
        "image[0]": ([-300.0, -250.0, -410.0], [-200.0, -350.0, -400.0]),  # margins -100, 100, -10
        "image[1]": ([-1.0, -2.0, -3.0], [-3.0, -2.0, -1.0]),
        "image[2]": ([-5.0, -6.0, -7.0], [-5.0, -6.0, -7.0]),  # margins all 0
    }
    scores = Scores(
        # the policy's scores play no part: the betas come from the reference's
        policy={n: sides([99.0] * 3, [-99.0] * 3) for n in reference},
        reference={n: sides(c, r) for n, (c, r) in reference.items()},
        sizes={n: sides([1.0] * 3, [1.0] * 3) for n in reference},
        seeds=torch.zeros(3, 5, dtype=torch.long),
    )
    s_plan = math.sqrt(((0.5 * 1) ** 2 + (0.5 * 3) ** 2 + 0.0) / 3)
    s_note = math.sqrt((2**2 + 1**2 + 4**2) / 3)
    s_image = math.sqrt(((2 * 100) ** 2 + (2 * 100) ** 2 + (2 * 10) ** 2) / 3)
    target = (0.1 * s_plan + 0.3 * s_note) / 2  # note's own beta, 0.3; plan's the run's, 0.1
    found = auto_betas(system, scores, {"plan", "note"}, 0.1, {"note": 0.3, "image[1]": 7.0})
    assert set(found) == {"image[0]"}
    assert found["image[0]"] == pytest.approx(target / s_image, rel=1e-12)
    assert target / s_image == pytest.approx(0.0027030, rel=1e-4)  # the worked number, for the record
    # no exact node to match: nothing is set
    assert auto_betas(system, scores, set(), 0.1, {}) == {}


# ---------------------------------------------------------------- IPO on a system


def test_ipo_divides_each_nodes_log_ratio_by_its_own_size():
    """Two pairs, an LM node `plan` (token counts per side) and a node without sizes (`image`: size 1),
    with a node weight on `image`: ((sum_n weight_n (r_w,n / |w_n| - r_l,n / |l_n|)) - 1/(2 beta))^2,
    averaged, written with floats."""
    plan_c, plan_r = [-2.0, 3.0], [-6.0, -1.5]
    plan_tokens_c, plan_tokens_r = [4.0, 2.0], [3.0, 0.0]  # a 0-token side counts as 1 (TRL's clamp)
    image_c, image_r = [40.0, -10.0], [25.0, 5.0]
    out = log_ratio(
        {"plan": sides(plan_c, plan_r), "image": sides(image_c, image_r)},
        {"plan": sides(plan_tokens_c, plan_tokens_r)},
    )
    beta, weight = 0.25, 0.5
    expected = []
    for k in range(2):
        d = plan_c[k] / plan_tokens_c[k] - plan_r[k] / max(plan_tokens_r[k], 1.0)
        d += weight * (image_c[k] / 1 - image_r[k] / 1)
        expected.append((d - 1 / (2 * beta)) ** 2)
    # pair 0: -0.5 + 2 + 7.5 - 2 = 7 -> 49; pair 1: 1.5 + 1.5 - 7.5 - 2 = -6.5 -> 42.25
    assert expected == pytest.approx([49.0, 42.25])
    found = sysdpo_loss(out, beta=beta, loss_type="ipo", node_weights={"image": weight})
    assert found.item() == pytest.approx(sum(expected) / 2, rel=1e-12)
    # not the unnormalised total's IPO
    unnormalised = [
        ((plan_c[k] + weight * image_c[k]) - (plan_r[k] + weight * image_r[k]) - 2) ** 2 for k in (0, 1)
    ]
    assert abs(found.item() - sum(unnormalised) / 2) > 1.0


# ---------------------------------------------------------------- node betas, hinge and robust


def node_beta_case():
    a_c, a_r = [1.0, 5.0, -2.0], [0.2, 1.0, 1.0]
    b_c, b_r = [3.0, 10.0, 0.5], [2.0, 4.0, 1.5]
    out = log_ratio({"a": sides(a_c, a_r), "b": sides(b_c, b_r)})
    # h = sum_n beta_n * weight_n * (r_w,n - r_l,n): a's own beta 0.5; b the run's 0.1, weight 2
    h = [0.5 * (a_c[k] - a_r[k]) + 0.1 * 2.0 * (b_c[k] - b_r[k]) for k in range(3)]
    assert h == pytest.approx([0.6, 3.2, -1.7])  # below the hinge's margin, above it, and wrong
    return out, h


def test_node_betas_with_the_hinge_loss_by_hand():
    out, h = node_beta_case()
    found = sysdpo_loss(out, beta=0.1, loss_type="hinge", node_betas={"a": 0.5}, node_weights={"b": 2.0})
    expected = sum(max(0.0, 1 - x) for x in h) / 3  # (0.4 + 0 + 2.7) / 3
    assert expected == pytest.approx(3.1 / 3)
    assert found.item() == pytest.approx(expected, rel=1e-12)


def test_node_betas_with_the_robust_loss_by_hand():
    out, h = node_beta_case()
    eps = 0.2
    found = sysdpo_loss(
        out,
        beta=0.1,
        loss_type="robust",
        label_smoothing=eps,
        node_betas={"a": 0.5},
        node_weights={"b": 2.0},
    )
    expected = sum((-(1 - eps) * logsigmoid(x) + eps * logsigmoid(-x)) / (1 - 2 * eps) for x in h) / 3
    assert found.item() == pytest.approx(expected, rel=1e-12)
    sigmoid = sum(-logsigmoid(x) for x in h) / 3
    assert abs(found.item() - sigmoid) > 0.1  # the smoothing shows


# ---------------------------------------------------------------- SysDPO-Sampling: each node's share


@pytest.fixture
def chain(tiny, write_system):
    cmp = write_system(
        f'system m\ncomponent first = causal_lm("{tiny["lm"]}")\n'
        f'component second = causal_lm("{tiny["lm2"]}")\n'
        'input x : text\ny : text ~ first(x, template="Pick for {x}:")\n'
        'z : text ~ second(y, template="Say {y}:", weight=0.5)\noutput z\n'
    )
    system = compound.load(cmp)
    perturb(system.backend("first").model, seed=1, scale=0.5)
    perturb(system.backend("second").model, seed=2, scale=0.5)
    return system


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def softmax(values: list[float]) -> list[float]:
    norm = logsumexp(values)
    return [math.exp(v - norm) for v in values]


def entropy(w: list[float]) -> float:
    return -sum(p * math.log(p) for p in w if p > 0)


def test_each_nodes_share_of_a_sampling_log_ratio_by_brute_force(chain, tiny):
    """Per side and pair, with every candidate y^a scored by transformers directly: s^a = s_y(a) +
    0.5 s_z(a) under the policy and the reference, w = softmax(s_policy), v = softmax(s_ref). The total is
    logsumexp(s_policy) - logsumexp(s_ref); node y's share is sum_a w_a s_y,policy(a) - sum_a v_a
    s_y,ref(a) + H(w) - H(v) (y is the first missing node); z's is 0.5 (sum_a w_a s_z,policy(a) - sum_a
    v_a s_z,ref(a)). Two pairs with different numbers of candidates."""
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    chosen = [{"x": "a disc", "z": " yes"}, {"x": "the sky", "z": " blue and wide"}]
    rejected = [{"x": "a disc", "z": " no"}, {"x": "the sky", "z": " dark"}]
    found = [[{"y": " small"}, {"y": " large"}, {"y": " huge"}], [{"y": " medium"}, {"y": " tiny"}]]
    out = marginal_log_ratio(chain.system, chain.backends, chosen, rejected, found)
    first, second = chain.backend("first"), chain.backend("second")

    def node_scores(model_first, model_second, x, z, ys):
        s_y = [lm_logp(model_first, tokenizer, f"Pick for {x}:", y) for y in ys]
        s_z = [lm_logp(model_second, tokenizer, f"Say {y}:", z) for y in ys]
        return s_y, s_z

    entropy_gaps = []
    for side, rows in ((0, chosen), (1, rejected)):
        for k, row in enumerate(rows):
            ys = [a["y"] for a in found[k]]
            pol_y, pol_z = node_scores(first.model, second.model, row["x"], row["z"], ys)
            with first.reference() as ref_first, second.reference() as ref_second:
                ref_y, ref_z = node_scores(ref_first, ref_second, row["x"], row["z"], ys)
            pol = [a + 0.5 * b for a, b in zip(pol_y, pol_z, strict=True)]
            ref = [a + 0.5 * b for a, b in zip(ref_y, ref_z, strict=True)]
            w, v = softmax(pol), softmax(ref)
            gap = entropy(w) - entropy(v)
            share_y = sum(p * s for p, s in zip(w, pol_y, strict=True))
            share_y -= sum(p * s for p, s in zip(v, ref_y, strict=True))
            share_y += gap
            share_z = 0.5 * (
                sum(p * s for p, s in zip(w, pol_z, strict=True))
                - sum(p * s for p, s in zip(v, ref_z, strict=True))
            )
            total = logsumexp(pol) - logsumexp(ref)
            assert out.per_node["y"][side][k].item() == pytest.approx(share_y, abs=1e-4)
            assert out.per_node["z"][side][k].item() == pytest.approx(share_z, abs=1e-4)
            assert (out.chosen if side == 0 else out.rejected)[k].item() == pytest.approx(total, abs=1e-4)
            assert share_y + share_z == pytest.approx(total, abs=1e-9)  # the identity, by hand
            assert (out.per_node["y"][side][k] + out.per_node["z"][side][k]).item() == pytest.approx(
                (out.chosen if side == 0 else out.rejected)[k].item(), abs=1e-5
            )
            entropy_gaps.append(gap)
    assert max(abs(g) for g in entropy_gaps) > 1e-3  # the entropy term matters in this example
