"""A package adds a component kind through the `compound.backends` entry-point group."""

import math
import sys
import textwrap

import pytest
import torch

import compound
from compound import backends

PLUGIN = '''
import pytest
import torch
from torch import nn

from compound.backends import Kind, Signature
from compound.backends.base import Backend


class Lengths(Backend):
    """A toy kind: scores a text by w * its length (w is the one parameter)."""

    spec = Kind("lengths", Signature(("text",), "text"))

    @classmethod
    def load(cls, component, root, reference=None, trust_remote_code=False):
        model = nn.Linear(1, 1, bias=False)
        nn.init.constant_(model.weight, 1.0)
        return cls(component, model, reference)

    def prepare(self, condition, value, options):
        return float(len(value))

    def _score(self, model, items, draws):
        return model(torch.tensor(items)[:, None]).squeeze(1)
'''


def test_an_installed_entry_point_adds_a_kind(tmp_path, monkeypatch, write_system):
    (tmp_path / "lengths_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = tmp_path / "lengths_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lengths-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[compound.backends]\nlengths = lengths_plugin:Lengths\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._plugins.cache_clear()
    try:
        assert "lengths" in backends.kinds()
        assert str(backends.signature("lengths")) == "text -> text"
        cmp = write_system(
            'system s\ncomponent counter = lengths("unused")\ninput x : text\n'
            "y : text ~ counter(x)\noutput y\n"
        )
        system = compound.load(cmp)
        with torch.no_grad():
            system.backend("counter").model.weight.fill_(3.0)
        out = system.log_ratio([{"x": "a", "y": "four"}], [{"x": "a", "y": "sixsix"}])
        assert out.chosen.item() == 3 * 4 - 4 and out.rejected.item() == 3 * 6 - 6
    finally:
        sys.modules.pop("lengths_plugin", None)
        backends._plugins.cache_clear()


WORDS = '''
import pytest
import torch
from torch import nn

from compound.backends import Kind, Signature
from compound.backends.base import Backend


class Words(Backend):
    """A toy kind that samples: "ab" or "abcd", scored by w * length."""

    spec = Kind("words", Signature(("text",), "text"))

    @classmethod
    def load(cls, component, root, reference=None, trust_remote_code=False):
        return cls(component, nn.Linear(1, 1, bias=False), reference)

    def prepare(self, condition, value, options):
        return float(len(value))

    def _score(self, model, items, draws):
        return model(torch.tensor(items)[:, None]).squeeze(1)

    def sample(self, conditions, generator, **options):
        return [("ab", "abcd")[int(torch.randint(0, 2, (1,), generator=generator))] for _ in conditions]
'''


def test_a_plugin_kind_gets_sysdpo_sampling_candidates_from_the_contract(tmp_path, monkeypatch, write_system):
    """`candidates` is part of the contract: by default distinct draws of `sample`; a kind without a
    search of its own or without `sample` says so instead of failing with an AttributeError."""
    from compound.interpret.candidates import candidates

    (tmp_path / "toy_plugins.py").write_text(textwrap.dedent(PLUGIN) + textwrap.dedent(WORDS))
    info = tmp_path / "toy_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[compound.backends]\nlengths = toy_plugins:Lengths\nwords = toy_plugins:Words\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backends._plugins.cache_clear()
    try:
        for kind, strategy, expected in (
            ("words", "sample", None),
            ("words", "beam", "no beam search"),
            ("lengths", "sample", "cannot sample"),
        ):
            cmp = write_system(
                f'system s\ncomponent first = {kind}("unused")\ncomponent second = lengths("unused")\n'
                "input x : text\ny : text ~ first(x)\nz : text ~ second(y)\noutput z\n"
            )
            system = compound.load(cmp)
            draw = torch.Generator().manual_seed(0)
            if expected is None:
                found = candidates(system.system, system.backends, {"x": "q", "z": "yes"}, 8, strategy, draw)
                assert sorted(a["y"] for a in found) == ["ab", "abcd"]  # distinct values of 8 draws
                check_marginal(system, found)
            else:
                with pytest.raises(compound.CompoundError, match=expected):
                    candidates(system.system, system.backends, {"x": "q", "z": "yes"}, 2, strategy, draw)
    finally:
        sys.modules.pop("toy_plugins", None)
        backends._plugins.cache_clear()


def check_marginal(system, found) -> None:
    """The toy kinds' marginal in closed form. y ~ first(x) scores w1 * len(y), z ~ second(y) w2 * len(z),
    so over the candidates y in {"ab", "abcd"}: log p(z|x) = logsumexp_y (w1 len(y) + w2 len(z)), the
    policy's minus the reference's; node y's share is its posterior-weighted log ratio plus the entropy
    difference H(w_policy) - H(w_ref) (w = softmax over y of w1 len(y): the z term is the same for every
    y), node z's w2 len(z) - w2' len(z)."""
    policy, reference = {"first": 0.7, "second": 1.5}, {"first": 0.2, "second": 1.0}
    for name in policy:
        backend = system.backend(name)
        with torch.no_grad(), backend.reference() as model:
            backend.model.weight.fill_(policy[name])
            model.weight.fill_(reference[name])
    out = system.log_ratio([{"x": "q", "z": "yes"}], [{"x": "q", "z": "no"}], candidates={0: found})
    lengths = [len(a["y"]) for a in found]

    def lse(values):
        return math.log(sum(math.exp(v) for v in values))

    def posterior(w1):
        norm = lse([w1 * n for n in lengths])
        return [math.exp(w1 * n - norm) for n in lengths]

    def entropy(w):
        return -sum(p * math.log(p) for p in w)

    p1, p2, r1, r2 = policy["first"], policy["second"], reference["first"], reference["second"]
    wp, wr = posterior(p1), posterior(r1)
    for side, z in ((0, "yes"), (1, "no")):
        total = lse([p1 * n + p2 * len(z) for n in lengths]) - lse([r1 * n + r2 * len(z) for n in lengths])
        share_y = (
            sum(w * p1 * n for w, n in zip(wp, lengths, strict=True))
            - sum(w * r1 * n for w, n in zip(wr, lengths, strict=True))
            + entropy(wp)
            - entropy(wr)
        )
        share_z = (p2 - r2) * len(z)
        assert share_y + share_z == pytest.approx(total, abs=1e-12)
        assert (out.chosen, out.rejected)[side].item() == pytest.approx(total, abs=1e-5)
        assert out.per_node["y"][side].item() == pytest.approx(share_y, abs=1e-5)
        assert out.per_node["z"][side].item() == pytest.approx(share_z, abs=1e-5)
    # chosen: log(e^1.4 + e^2.8) + 4.5 - log(e^0.4 + e^0.8) - 3, worked once by hand
    assert out.chosen.item() == pytest.approx(3.2074, abs=1e-4)
