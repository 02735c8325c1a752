"""SysDPO-Sampling: the candidate estimate of log p(z|x) against exact enumeration; training through it."""

import math

import pytest
import torch
from conftest import perturb
from test_log_ratio import lm_logp
from transformers import AutoTokenizer

import compound
from compound.estimators.marginal import log_marginal
from compound.estimators.marginal import log_ratio as marginal_log_ratio
from compound.interpret.candidates import candidates

CHOICES = ["small", "medium", "large", "huge"]


@pytest.fixture
def chain(tiny, write_system):
    cmp = write_system(
        f'system m\ncomponent first = causal_lm("{tiny["lm"]}")\n'
        f'component second = causal_lm("{tiny["lm2"]}")\n'
        f'input x : text\ny : text ~ first(x, choice="{"|".join(CHOICES)}", template="Pick for {{x}}:")\n'
        'z : text ~ second(y, template="Say {y}:")\noutput z\n'
    )
    system = compound.load(cmp)
    perturb(system.backend("first").model, seed=1, scale=0.5)
    perturb(system.backend("second").model, seed=2, scale=0.5)
    return system


def exact(system, tokenizer, x: str, z: str, model=lambda b: b.model) -> float:
    """log sum_y p(y|x) p(z|y), enumerating the choice node's values with transformers directly."""
    first, second = model(system.backend("first")), model(system.backend("second"))
    prior = torch.tensor([lm_logp(first, tokenizer, f"Pick for {x}:", c) for c in CHOICES])
    prior = prior - torch.logsumexp(prior, 0)
    likelihood = torch.tensor([lm_logp(second, tokenizer, f"Say {c}:", z) for c in CHOICES])
    return torch.logsumexp(prior + likelihood, 0).item()


def test_candidates_that_cover_the_space_give_the_exact_marginal_and_fewer_a_lower_bound(chain, tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    rows = [{"x": "a disc", "z": " yes"}, {"x": "the sky", "z": " blue and wide"}]
    g = torch.Generator().manual_seed(0)
    full = [candidates(chain.system, chain.backends, row, len(CHOICES), "beam", g) for row in rows]
    assert all(sorted(a["y"] for a in found) == sorted(CHOICES) for found in full)
    estimate = log_marginal(chain.system, chain.backends, rows, full)
    for k, row in enumerate(rows):
        # float32's rounding of a sum of a hundred and more: a part in a million
        assert estimate[k].item() == pytest.approx(exact(chain, tokenizer, row["x"], row["z"]), rel=1e-6)
    previous = None
    for size in (1, 2, 3):
        fewer = [candidates(chain.system, chain.backends, row, size, "beam", g) for row in rows]
        assert all(len(f) == size for f in fewer)
        bound = log_marginal(chain.system, chain.backends, rows, fewer)
        assert (bound <= estimate + 1e-5).all()  # a lower bound: the missing terms are positive
        if previous is not None:
            assert (previous <= bound + 1e-5).all()  # and it tightens as candidates are added
        previous = bound
    assert (
        log_marginal(chain.system, chain.backends, rows, [f[1:] for f in full]) < estimate - 1e-3
    ).all()  # without the best one
    # beam gives the most probable choices first: the best single candidate is the tightest bound of size 1
    best = log_marginal(
        chain.system,
        chain.backends,
        rows,
        [candidates(chain.system, chain.backends, row, 1, "beam", g) for row in rows],
    )
    for choice in CHOICES:
        assert (best >= log_marginal(chain.system, chain.backends, rows, [[{"y": choice}]] * 2) - 1e-6).all()


def test_marginal_log_ratio_is_policy_minus_reference_and_its_shares_add_up(chain, tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny["lm"])
    chosen, rejected = [{"x": "a disc", "z": " yes"}], [{"x": "a disc", "z": " no"}]
    drawn = candidates(
        chain.system, chain.backends, chosen[0], 20, "sample", torch.Generator().manual_seed(0)
    )
    assert len({a["y"] for a in drawn}) == len(drawn) and {a["y"] for a in drawn} <= set(CHOICES)  # distinct
    found = [[{"y": c} for c in CHOICES]]
    out = marginal_log_ratio(chain.system, chain.backends, chosen, rejected, found)
    reference = lambda backend: backend._reference_copy[0]  # noqa: E731  (the frozen copy)
    for side, row in ((0, chosen[0]), (1, rejected[0])):
        expected = exact(chain, tokenizer, row["x"], row["z"]) - exact(
            chain, tokenizer, row["x"], row["z"], reference
        )
        total = out.chosen if side == 0 else out.rejected
        assert total.item() == pytest.approx(expected, abs=1e-4)
        assert sum(out.per_node[n][side] for n in ("y", "z")).item() == pytest.approx(total.item(), abs=1e-5)
    assert abs(out.chosen.item()) > 1e-3


def test_log_ratio_picks_direct_or_sampling_per_pair(chain):
    complete = ({"x": "q", "y": "small", "z": " a"}, {"x": "q", "y": "large", "z": " b"})
    partial = ({"x": "r", "z": " c"}, {"x": "r", "z": " d"})
    found = {1: [{"y": c} for c in CHOICES]}
    mixed = chain.log_ratio(
        [complete[0], partial[0]],
        [complete[1], partial[1]],
        candidates=found,
        generator=torch.Generator().manual_seed(0),
    )
    alone = chain.log_ratio([complete[0]], [complete[1]])
    sampled = marginal_log_ratio(chain.system, chain.backends, [partial[0]], [partial[1]], [found[1]])
    assert mixed.chosen[0].item() == pytest.approx(alone.chosen.item(), abs=1e-5)
    assert mixed.chosen[1].item() == pytest.approx(sampled.chosen.item(), abs=1e-5)
    with pytest.raises(compound.CompoundError, match=r"'y' is missing .* candidates for SysDPO-Sampling"):
        chain.log_ratio([partial[0]], [partial[1]])
    assert math.isfinite(compound.sysdpo_loss(mixed, beta=0.1, nll=0.1).item())
